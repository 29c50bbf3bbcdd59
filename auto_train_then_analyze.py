#!/usr/bin/env python
"""The whole lab in one command (batch -> analysis -> summary): the same command as `picollm pipeline`.

    python auto_train_then_analyze.py --fast
"""

from picollm.cli.pipeline import main
from picollm.core.commands import run_cli

if __name__ == "__main__":
    run_cli(main)
