#!/usr/bin/env python
"""bf16 against fp32: the same runs trained both ways at the same time, their quality and their training time.

    python bench/precision.py [--space bench/precision.yaml] [--out_dir DIR] [--workers 1]

Two `picollm batch` processes train the space (default: every family at the time-to-quality shape, 4 seeds)
at once, one with --precision fp32 and one with --precision bf16, each with --workers workers of one torch
thread, so both see the machine alike. Every run is scored on the whole valid split in fp32 (the trainer's
evaluation), so the two columns compare the weights, not the arithmetic of the scoring. Prints, per family:
the final val loss of fp32 and bf16 (mean and sample standard deviation over the seeds, and the fp32 seeds'
range), the difference of the means, and whether the bf16 mean lies within the fp32 seeds' range; then one
line

    precision <family>=<within|outside> ...

Speed is bench/precision_speed.py's (steps interleaved): the two batches here drift apart in time, so their
training seconds are not paired. --only FAMILY trains that family's configs alone.

Runs are kept under --out_dir (default: a temporary directory), so a rerun resumes and skips finished ones.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
PRECISIONS = ("fp32", "bf16")


def train_both(space: str, root: Path, workers: int) -> None:
    procs = [subprocess.Popen([sys.executable, "-m", "picollm", "batch", "--space", space, "--precision", p,
                               "--out_dir", str(root / p), "--log_dir", str(root / p / "logs"), "--workers",
                               str(workers), "--threads", "1"], cwd=ROOT,
                              stdout=subprocess.DEVNULL)
             for p in PRECISIONS]
    if any(proc.wait() for proc in procs):
        raise SystemExit("a batch failed (see above)")


def read_runs(out_dir: Path) -> dict[str, list[tuple[str, float, float]]]:
    """family -> [(run name, final val loss, training seconds)]"""
    runs: dict[str, list[tuple[str, float, float]]] = defaultdict(list)
    for config in sorted(out_dir.glob("*/config.json")):
        run_dir = config.parent
        family = json.loads(config.read_text())["model"]
        val = float(pd.read_csv(run_dir / "metrics.csv")["val_loss"].iloc[-1])
        seconds = float(json.loads((run_dir / "status.json").read_text())["train_seconds"])
        runs[family].append((run_dir.name, val, seconds))
    return runs


def family_line(family: str, fp32: list[tuple[str, float, float]], bf16: list[tuple[str, float, float]]) -> tuple[str, str]:
    a, b = [v for _, v, _ in fp32], [v for _, v, _ in bf16]
    within = min(a) <= statistics.mean(b) <= max(a)
    line = (f"{family:<12} fp32 {statistics.mean(a):.4f} +- {statistics.stdev(a):.4f} (range {min(a):.4f}-"
            f"{max(a):.4f})  bf16 {statistics.mean(b):.4f} +- {statistics.stdev(b):.4f}  diff "
            f"{statistics.mean(b) - statistics.mean(a):+.4f}  bf16 mean {'within' if within else 'OUTSIDE'} the "
            f"fp32 range  (n={len(a)}/{len(b)})")
    return line, f"{family}={'within' if within else 'outside'}"


def only_family(space: str, family: str, tmp: Path) -> str:
    """The space file with the configs of one family only."""
    d = yaml.safe_load(Path(space).read_text())
    d["configs"] = [c for c in d["configs"] if c.get("model") == family]
    if not d["configs"]:
        raise SystemExit(f"--only {family}: no config of that family in {space}")
    path = tmp / f"{family}.yaml"
    path.write_text(yaml.safe_dump(d))
    return str(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", default=str(ROOT / "bench" / "precision.yaml"))
    parser.add_argument("--out_dir", default="", help="keep the runs here (default: a temporary directory)")
    parser.add_argument("--workers", type=int, default=1, help="workers per precision")
    parser.add_argument("--only", default="", help="train the configs of this family only")
    args = parser.parse_args()
    print(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.out_dir or tmp)
        space = only_family(args.space, args.only, Path(tmp)) if args.only else args.space
        train_both(space, root, args.workers)
        runs = {p: read_runs(root / p) for p in PRECISIONS}
    pairs = [family_line(f, runs["fp32"][f], runs["bf16"][f]) for f in runs["fp32"] if len(runs["bf16"][f]) > 1]
    for line, _ in pairs:
        print(line)
    print("precision " + " ".join(word for _, word in pairs))


if __name__ == "__main__":
    main()
