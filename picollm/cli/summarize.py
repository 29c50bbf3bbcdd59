#!/usr/bin/env python
"""Summarise every analysed run: Pareto frontiers, regressions, heatmaps, top-10, and index.html.

    python total_summary_analysis.py
    python total_summary_analysis.py --analysis_dir analysis_runs --formula "val_loss ~ np.log(params) + C(model)"
    python total_summary_analysis.py --color_by embed          # colour the learning-curve overlays by embed
"""

from __future__ import annotations

import argparse

from picollm.core.commands import ArgumentParser, run_cli
from picollm.core.log import setup_logging
from picollm.study.summarize import add_summary_args, summarize


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_summary_args(parser)
    args = parser.parse_args(argv)
    log_path = setup_logging("summary")
    result = summarize(args.analysis_dir, formula=args.formula, color_by=args.color_by)
    print(f"\n{len(result['written'])} file(s) in {args.analysis_dir}/plots, {len(result['skipped'])} skipped "
          f"(see plots/skipped.txt); log in {log_path}")
    print(f"report: {result['report'].resolve()}")
    return 0


if __name__ == "__main__":
    run_cli(main)
