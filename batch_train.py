#!/usr/bin/env python
"""Train a search space of runs: the same command as `picollm batch` (python batch_train.py --help).

    python batch_train.py --preset fast --workers 2
    python batch_train.py --preset xlstm-ptb-grid --dry_run
"""

from picollm.cli.batch import main
from picollm.core.commands import run_cli

if __name__ == "__main__":
    run_cli(main)
