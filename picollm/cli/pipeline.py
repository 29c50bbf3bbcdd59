"""The whole lab in one command: batch training -> analysis of every run -> summary plots + index.html.

    picollm pipeline --fast                  # every family on Tiny Shakespeare, < 5 min on 2 cores
    picollm pipeline --preset pico --n_runs 40 --workers 4
    picollm pipeline --space my_space.yaml --device cuda --runs_per_gpu 4
    picollm pipeline --preset pico --backend ray --address HEAD:6379 --out_dir /shared/ck --analysis_dir /shared/an

Every stage is idempotent: running the same command again retrains nothing, re-analyses nothing and redraws
nothing (finished runs, up-to-date analyses and plots are skipped), so it also finishes an interrupted
pipeline. Each stage logs to logs/<timestamp>-<stage>.log; the last line printed is the report's path.
(`python auto_train_then_analyze.py ...` is the same command.)
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

from picollm.analyze.settings import DecodeConfig, add_max_new_tokens_arg
from picollm.core.commands import ArgumentParser
from picollm.core.errors import ConfigError
from picollm.core.log import get_logger, setup_logging
from picollm.study.summarize import add_summary_args, check_summary_inputs, families, summarize
from picollm.sweep.batch import add_batch_args, batch_kwargs, train_batch

log = get_logger()

#: a family has learned when its best val loss is below this fraction of its untrained loss
LEARNED_RATIO = 0.9


def parse_args(argv: list[str] | None, prog: str | None = None) -> argparse.Namespace:
    parser = ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fast", action="store_true",
                        help="the `fast` preset: every family on Tiny Shakespeare, a few short runs each (< 5 min on "
                             "2 CPU cores); checks that every family learned")
    add_max_new_tokens_arg(parser)
    add_summary_args(parser)
    add_batch_args(parser)
    args = parser.parse_args(argv)
    if args.fast:
        if args.preset not in (None, "fast") or args.space:
            raise ConfigError("--fast is the `fast` preset; drop --fast or --preset/--space")
        args.preset = "fast"
    return args


def learning_check(table: pd.DataFrame, runs: set[str]) -> tuple[list[str], bool]:
    """Per family, the best of this batch's runs: untrained val loss -> best val loss, and whether it learned."""
    rows = table[table["run"].isin(runs)].dropna(subset=["val_loss", "initial_val_loss"])
    lines, ok = [], True
    for fam in families(rows):
        best = rows[rows["model"] == fam].sort_values("val_loss").iloc[0]
        learned = best["val_loss"] < LEARNED_RATIO * best["initial_val_loss"]
        ok &= bool(learned)
        lines.append(f"  {fam:<12} val loss {best['initial_val_loss']:.3f} -> {best['val_loss']:.3f} "
                     f"(best of {int((rows['model'] == fam).sum())} run(s); {'learned' if learned else 'DID NOT LEARN'})")
    return lines, ok


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = parse_args(argv, prog)
    start = time.perf_counter()
    timings = {}
    # what the analysis and the summary will be given is checked now: found after the training, a mistake costs it
    DecodeConfig(max_new_tokens=args.max_new_tokens)
    check_summary_inputs(args.analysis_dir, args.formula, args.color_by)

    # 1. training (train_batch logs to <log_dir>/<timestamp>-batch.log itself)
    t = time.perf_counter()
    batch = train_batch(**batch_kwargs(args))
    timings["train"] = time.perf_counter() - t
    if args.dry_run:
        return batch.exit_code
    runs = {o.run for o in batch.outcomes}

    # 2. analysis of every run under --out_dir (up-to-date analyses are skipped)
    # the analysis imports torch: not needed for --help, a usage error or a dry run
    from picollm.analyze.analysis import analyze_all, available_cores

    setup_logging("analyze", args.log_dir)
    t = time.perf_counter()
    # on the batch's backend: a batch trained on Ray is analysed there (--workers: runs at once at most)
    workers = args.workers or (available_cores() if args.backend == "local" else None)
    table = analyze_all(args.out_dir, args.analysis_dir, workers=workers, skip_existing=args.skip_existing,
                        device=args.device or "cpu", max_new_tokens=args.max_new_tokens, backend=args.backend,
                        address=args.address)
    timings["analyze"] = time.perf_counter() - t
    tally = table.attrs.get("tally", {})

    # 3. summary plots and the report
    summary_log = setup_logging("summary", args.log_dir)
    t = time.perf_counter()
    result = summarize(args.analysis_dir, formula=args.formula, skip_unchanged=args.skip_existing,
                       color_by=args.color_by)
    timings["summary"] = time.perf_counter() - t

    lines, learned = learning_check(table, runs)
    counts = batch.counts()
    drawn = "up to date" if result["unchanged"] else f"{len(result['written'])} files"
    log.info(f"training: {counts.get('done', 0)} trained, {counts.get('skipped', 0)} already finished, "
             f"{counts.get('failed', 0)} failed; analysis: {len(tally.get('analyzed', []))} analysed, "
             f"{len(tally.get('up_to_date', []))} up to date, {len(tally.get('failed', {}))} failed; "
             f"summary: {drawn}, {len(result['skipped'])} plot(s) skipped (plots/skipped.txt)")
    log.info("per family, untrained -> best validation loss:\n" + "\n".join(lines))
    log.info("wall time: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items())
             + f", total {time.perf_counter() - start:.1f} s; logs in {Path(args.log_dir)}/ (last: {summary_log.name})")
    if args.fast and not learned:
        log.error(f"--fast: a family did not get below {LEARNED_RATIO:.0%} of its untrained loss (see above)")
    print(f"report: {result['report'].resolve()}")
    failed = batch.exit_code or tally.get("failed") or (args.fast and not learned)
    return 1 if failed else 0
