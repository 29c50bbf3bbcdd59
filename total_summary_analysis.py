#!/usr/bin/env python
"""Summarise every analysed run (plots, index.html): the same command as `picollm summarize`.

    python total_summary_analysis.py --analysis_dir analysis_runs
"""

from picollm.cli.summarize import main
from picollm.core.commands import run_cli

if __name__ == "__main__":
    run_cli(main)
