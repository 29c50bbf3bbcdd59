#!/usr/bin/env python
"""Wall time of picollm jobs started side by side vs alone: two analyses, and a batch beside an analysis.

    python bench/concurrent_jobs.py [--runs 6] [--batch_runs 3] [--max_new_tokens 100] [--repeat 1] [--old]

Trains `--runs` tiny runs once, then times real commands, each in its own process as a user starts them:
  - analyze_all_checkpoints.py --workers 1, alone; then two of them at once against the same --out;
  - batch_train.py --workers 1 on `--batch_runs` tiny configs, alone; then beside an analysis.
Each job sizes its torch threads to its share of the cores (picollm/core/resources.py), so on a machine with
at least as many cores as busy processes a job beside another should take about as long as alone
(goal: <= 1.5x). --old also times the jobs with --threads <cores> each: every job sized to the whole
machine, as before. Checks that the shared summary table is intact (one row per run, the same rows as
an analysis alone) and that every batch run finished.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd

from picollm.config import RunConfig
from picollm.core.resources import cpu_cores, running_jobs
from picollm.runs.table import TABLE_COLUMNS, TABLE_NAME, TIMING_COLUMNS, read_table
from picollm.train.loop import train_run

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = ["kgram_mlp", "lstm", "transformer"]
GOAL = 1.5


def train_runs(ck: Path, n: int) -> None:
    for i in range(n):
        cfg = RunConfig(corpus="tinyshakespeare", model=FAMILIES[i % len(FAMILIES)], embed=32, hidden=64, layers=1,
                        heads=2, block_size=32, batch_size=16, max_steps=30, eval_interval=15, eval_tokens=2048,
                        seed=i // len(FAMILIES), out_dir=str(ck), progress=False)
        train_run(cfg, quiet=True)


def write_space(path: Path, n: int, steps: int) -> Path:
    space = {"base": {"corpus": "tinyshakespeare", "embed": 32, "hidden": 64, "layers": 1, "heads": 2,
                      "block_size": 32, "batch_size": 16, "max_steps": steps, "eval_interval": 50,
                      "eval_tokens": 2048},
             "configs": [{"model": FAMILIES[i % len(FAMILIES)], "seed": i // len(FAMILIES)} for i in range(n)]}
    path.write_text(json.dumps(space))
    return path


def together(commands: list[list[str]], cwd: Path) -> list[float]:
    """Start the commands at once in cwd (where their logs/ go); each one's wall time (a failing command
    stops the benchmark)."""
    seconds: list[float] = [0.0] * len(commands)
    errors: list[str] = []

    def one(i: int, cmd: list[str]) -> None:
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, *cmd], cwd=cwd, capture_output=True, text=True)
        seconds[i] = time.perf_counter() - start
        if proc.returncode != 0:
            errors.append(f"{' '.join(cmd[:1])} exited {proc.returncode}: {proc.stderr.strip()[-500:]}")

    threads = [threading.Thread(target=one, args=(i, c)) for i, c in enumerate(commands)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise SystemExit("\n".join(errors))
    return seconds


class Bench:
    def __init__(self, root: Path, ck: Path, space: Path, max_new_tokens: int) -> None:
        self.root, self.ck, self.space, self.max_new_tokens = root, ck, space, max_new_tokens
        self.n = 0

    def fresh(self, name: str) -> Path:
        self.n += 1
        path = self.root / f"{name}-{self.n}"
        shutil.rmtree(path, ignore_errors=True)
        return path

    def analysis(self, out: Path, threads: int = 0) -> list[str]:
        return [str(ROOT / "analyze_all_checkpoints.py"), "--checkpoints", str(self.ck), "--out", str(out),
                "--workers", "1", "--max_new_tokens", str(self.max_new_tokens), "--threads", str(threads),
                "--no-skip_existing"]  # each analysis does every run, even beside another one

    def batch(self, threads: int = 0) -> list[str]:
        out = self.fresh("batch")
        return [str(ROOT / "batch_train.py"), "--space", str(self.space), "--workers", "1", "--out_dir",
                str(out / "runs"), "--log_dir", str(out / "logs")] + (["--threads", str(threads)] if threads else [])


def check_table(out: Path, reference: pd.DataFrame | None, runs: int) -> pd.DataFrame:
    table = read_table(out / TABLE_NAME)
    assert list(table.columns) == TABLE_COLUMNS, "summary table columns changed"
    assert len(table) == runs and table["run"].is_unique, f"{len(table)} rows for {runs} runs"
    if reference is not None:
        drop = list(TIMING_COLUMNS)
        pd.testing.assert_frame_equal(reference.drop(columns=drop), table.drop(columns=drop),
                                      check_exact=False, rtol=1e-5)
    return table


def check_batches(root: Path, runs: int) -> None:
    for log_dir in root.glob("batch-*/logs"):
        manifest = json.loads(next(log_dir.glob("*.json")).read_text())
        assert manifest["counts"]["done"] == runs, f"{log_dir}: {manifest['counts']}"


def measure(b: Bench, runs: int, batch_runs: int, threads: int) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Alone and side-by-side wall times, all jobs with --threads `threads` (0: sized by picollm)."""
    alone: dict[str, float] = {}
    paired: dict[str, list[float]] = {}
    out = b.fresh("alone")
    alone["analysis"] = together([b.analysis(out, threads)], b.root)[0]
    reference = check_table(out, None, runs)
    out = b.fresh("two")
    paired["two analyses"] = together([b.analysis(out, threads), b.analysis(out, threads)], b.root)
    check_table(out, reference, runs)
    alone["batch"] = together([b.batch(threads)], b.root)[0]
    out = b.fresh("beside")
    paired["batch + analysis"] = together([b.batch(threads), b.analysis(out, threads)], b.root)
    check_table(out, reference, runs)
    check_batches(b.root, batch_runs)
    return alone, paired


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=6, help="trained runs each analysis analyses")
    parser.add_argument("--batch_runs", type=int, default=3, help="configs the batch trains")
    parser.add_argument("--batch_steps", type=int, default=300, help="steps per batch config")
    parser.add_argument("--max_new_tokens", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=1, help="repetitions (each time's best kept)")
    parser.add_argument("--old", action="store_true", help="also time every job with --threads <cores>")
    parser.add_argument("--keep", action="store_true", help="keep the runs and outputs (default: deleted)")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="bench_concurrent_"))
    try:
        run(args, root)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


def run(args: argparse.Namespace, root: Path) -> None:
    ck = root / "checkpoints"
    train_runs(ck, args.runs)
    b = Bench(root, ck, write_space(root / "space.json", args.batch_runs, args.batch_steps), args.max_new_tokens)
    cores = cpu_cores()
    print(f"{cores} cores; {args.runs} runs to analyse ({args.max_new_tokens} new tokens), a batch of "
          f"{args.batch_runs} x {args.batch_steps} steps; {len(running_jobs())} other picollm job(s) running")
    modes = {"sized by picollm": 0} | ({f"--threads {cores} (as before)": cores} if args.old else {})
    for mode, threads in modes.items():
        best_alone: dict[str, float] = {}
        best_paired: dict[str, list[float]] = {}
        for _ in range(args.repeat):
            alone, paired = measure(b, args.runs, args.batch_runs, threads)
            for k, v in alone.items():
                best_alone[k] = min(best_alone.get(k, float("inf")), v)
            for k, v in paired.items():
                best_paired[k] = [min(a, c) for a, c in zip(best_paired.get(k, [float("inf")] * len(v)), v)]
        print(f"\n{mode}:")
        print(f"  analysis alone      {best_alone['analysis']:6.1f} s")
        print(f"  batch alone         {best_alone['batch']:6.1f} s")
        for name, seconds in best_paired.items():
            kinds = ["analysis", "analysis"] if name == "two analyses" else ["batch", "analysis"]
            for kind, s in zip(kinds, seconds):
                ratio = s / best_alone[kind]
                print(f"  {name:18s}  {kind:8s} {s:6.1f} s = {ratio:4.2f}x alone"
                      f"{'' if ratio <= GOAL else f'  (over the {GOAL}x goal)'}")
    print(f"\nsummary tables intact: {args.runs} rows each, equal to an analysis alone (timing columns aside); "
          f"every batch run done{f'. Runs in {root}' if args.keep else ''}")


if __name__ == "__main__":
    main()
