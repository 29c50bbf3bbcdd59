"""Analyse one trained run: generations (best and last checkpoint; greedy, top-p, beam) with per-token
annotations, training curves, and test-set evaluation with perplexity by token frequency.

    picollm analyze --run checkpoints/<run> [--out analysis_runs] [--device cpu] [--max_new_tokens 200]
    picollm analyze --run checkpoints/<run> --influence [--influence_method cg --influence_n_train 128]

(`python analyze_checkpoints.py ...` is the same command.)
"""

from __future__ import annotations

import argparse
from pathlib import Path

from picollm.analyze.settings import (
    InfluenceSettings,
    add_influence_args,
    add_max_new_tokens_arg,
    influence_kwargs,
)
from picollm.core.commands import ArgumentParser
from picollm.core.log import setup_logging


def parse_args(argv: list[str] | None, prog: str | None = None) -> argparse.Namespace:
    parser = ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="run directory, e.g. checkpoints/<run>")
    parser.add_argument("--out", default="analysis_runs", help="root of the analysis directories")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps")
    add_max_new_tokens_arg(parser)
    add_influence_args(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = parse_args(argv, prog)
    influence = influence_kwargs(args)
    InfluenceSettings(**influence)  # every setting is checked before anything is written
    # the analysis imports torch: not needed for --help or a usage error
    from picollm.analyze.analysis import analyze_run
    from picollm.analyze.influence import analyze_influence

    setup_logging("analyze")
    summary = analyze_run(args.run, args.out, device=args.device, max_new_tokens=args.max_new_tokens)
    test = summary["test"]
    print(f"{summary['run']}: test loss {test['test_loss']:.4f}, ppl {test['test_ppl']:.2f}, "
          f"acc {test['test_acc']:.3f} on {test['test_tokens']} tokens -> {args.out}/{summary['run']}/")
    if args.influence:
        out_dir = Path(args.out) / summary["run"]
        result = analyze_influence(args.run, out_dir, device=args.device, **influence)
        print(f"{summary['run']}: Fisher trace {result['fisher_trace']:.4g}, influence of {args.influence_n_train} "
              f"training windows on {args.influence_n_test} test windows -> {out_dir}/influence_top.csv")
    return 0
