#!/usr/bin/env python
"""Validation perplexity against training seconds, for runs of any families (equal-time comparisons).

    python bench/curves_vs_time.py --runs checkpoints/<run> checkpoints/<run> --out docs/img/ptb_time.png

Prints every evaluation of every run (step, training seconds, val perplexity) and draws one chart with a
line per run. Training seconds are the runs' own (metrics.csv's elapsed_sec: evaluation time not counted).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from picollm.core.atomic import atomic_write  # noqa: E402
from picollm.core.commands import ArgumentParser, run_cli  # noqa: E402
from picollm.core.errors import PicoError  # noqa: E402
from picollm.runs.layout import read_json, read_metrics  # noqa: E402


def label(run_dir: Path) -> str:
    cfg = read_json(run_dir / "config.json")
    return f"{cfg['model']} {cfg['layers']} x {cfg['hidden']} ({run_dir.name})"


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", required=True, help="run directories")
    parser.add_argument("--out", required=True, help="PNG to write")
    args = parser.parse_args(argv)
    runs = [Path(r) for r in args.runs]
    for r in runs:
        if not (r / "metrics.csv").exists():
            raise PicoError(f"--runs: {r} is not a run directory (no metrics.csv)")
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for r in runs:
        m = read_metrics(r)
        m = m[m["step"] > 0]
        print(label(r))
        for row in m.itertuples():
            print(f"  step {row.step:>6}  {row.elapsed_sec:8.0f} s  val ppl {row.perplexity:8.2f}")
        ax.plot(m["elapsed_sec"] / 60, m["perplexity"], marker="o", label=label(r))
    ax.set_xlabel("training time (min, 1 thread)")
    ax.set_ylabel("validation perplexity")
    ax.set_yscale("log")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(Path(args.out), lambda f: fig.savefig(f, format="png", dpi=110))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    run_cli(main)
