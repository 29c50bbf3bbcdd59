#!/usr/bin/env python
"""Wall time of analyze_all with 1 worker vs N workers on a handful of tiny runs; checks the tables agree.

    python bench/analysis_workers.py [--runs 6] [--workers 2] [--max_new_tokens 100] [--repeat 2] [--keep DIR]

Trains `--runs` tiny runs on Tiny Shakespeare (kgram_mlp / lstm / transformer, different seeds; skipped when
already in DIR), then analyses them from scratch with workers=1 (torch threads = cores) and workers=N
(threads = cores / N), and, for reference, workers=1 on a single thread. Reports the speed-up ratios.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd

from picollm.analyze.analysis import analyze_all, available_cores
from picollm.config import RunConfig
from picollm.runs.table import TIMING_COLUMNS
from picollm.train.loop import train_run

FAMILIES = ["kgram_mlp", "lstm", "transformer"]


def train_runs(root: Path, n: int) -> Path:
    ck = root / "checkpoints"
    for i in range(n):
        cfg = RunConfig(corpus="tinyshakespeare", model=FAMILIES[i % len(FAMILIES)], embed=32, hidden=64, layers=1,
                        heads=2, block_size=32, batch_size=16, max_steps=30, eval_interval=15, eval_tokens=2048,
                        seed=i // len(FAMILIES), out_dir=str(ck), progress=False)
        train_run(cfg, quiet=True)
    return ck


def timed(ck: Path, out: Path, workers: int, threads: int, max_new_tokens: int) -> tuple[float, pd.DataFrame]:
    start = time.perf_counter()
    table = analyze_all(ck, out, workers=workers, skip_existing=False, max_new_tokens=max_new_tokens, threads=threads)
    seconds = time.perf_counter() - start
    if table.attrs["tally"]["failed"]:
        raise SystemExit(f"analysis failed: {table.attrs['tally']['failed']}")
    return seconds, table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=6)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--max_new_tokens", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=2, help="interleaved repetitions (best time kept)")
    parser.add_argument("--keep", default="", help="directory to keep the runs in (default: a temp dir)")
    args = parser.parse_args()

    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_analysis_"))
    ck = train_runs(root, args.runs)
    cores = available_cores()
    print(f"{args.runs} runs in {ck}; {cores} cores; {args.max_new_tokens} new tokens per generation")

    # interleave the configurations and keep each one's best time: the machine may be shared
    configs = {f"workers=1 ({cores} threads)": (1, 0), "workers=1 (1 thread)": (1, 1),
               f"workers={args.workers} ({max(1, cores // args.workers)} thread(s) each)": (args.workers, 0)}
    best: dict[str, float] = {}
    tables: dict[str, pd.DataFrame] = {}
    for r in range(args.repeat):
        for name, (workers, threads) in configs.items():
            seconds, tables[name] = timed(ck, root / f"out_{workers}_{threads}", workers, threads, args.max_new_tokens)
            best[name] = min(best.get(name, float("inf")), seconds)
            print(f"  repeat {r + 1}: {name:32s} {seconds:7.1f} s", flush=True)
    drop = list(TIMING_COLUMNS) + ["run_dir"]
    names = list(configs)
    for name in names[1:]:
        pd.testing.assert_frame_equal(tables[names[0]].drop(columns=drop), tables[name].drop(columns=drop),
                                      check_exact=False, rtol=1e-5)
    for name in names:
        print(f"{name:32s} best {best[name]:7.1f} s")
    print(f"speed-up {names[2]} vs {names[0]}: {best[names[0]] / best[names[2]]:.2f}x; "
          f"vs {names[1]}: {best[names[1]] / best[names[2]]:.2f}x; tables identical except timing columns")

if __name__ == "__main__":
    main()
