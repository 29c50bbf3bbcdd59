#!/usr/bin/env python
"""Analyse every run under --checkpoints: the same command as `picollm analyze-all`.

    python analyze_all_checkpoints.py --checkpoints checkpoints --out analysis_runs --workers 2
"""

from picollm.cli.analyze_all import main
from picollm.core.commands import run_cli

if __name__ == "__main__":
    run_cli(main)
