"""Summarise every analysed run: Pareto frontiers, regressions, heatmaps, top-10, and index.html.

    picollm summarize
    picollm summarize --analysis_dir analysis_runs --formula "val_loss ~ np.log(params) + C(model)"
    picollm summarize --color_by embed          # colour the learning-curve overlays by embed

(`python total_summary_analysis.py ...` is the same command.)
"""

from __future__ import annotations

import argparse

from picollm.core.commands import ArgumentParser
from picollm.core.log import setup_logging
from picollm.study.summarize import add_summary_args, summarize


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_summary_args(parser)
    args = parser.parse_args(argv)
    log_path = setup_logging("summary")
    result = summarize(args.analysis_dir, formula=args.formula, color_by=args.color_by)
    print(f"\n{len(result['written'])} file(s) in {args.analysis_dir}/plots, {len(result['skipped'])} skipped "
          f"(see plots/skipped.txt); log in {log_path}")
    print(f"report: {result['report'].resolve()}")
    return 0
