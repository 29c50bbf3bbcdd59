#!/usr/bin/env python
"""Analyse one trained run: the same command as `picollm analyze`.

    python analyze_checkpoints.py --run checkpoints/<run> [--out analysis_runs] [--influence]
"""

from picollm.cli.analyze import main
from picollm.core.commands import run_cli

if __name__ == "__main__":
    run_cli(main)
