#!/usr/bin/env python
"""The xLSTM study: the same command as `picollm xlstm-study`.

    python xlstm_study.py lm --max_steps 300
    python xlstm_study.py nn --lengths 4,8,16,32
"""

from picollm.cli.xlstm_study import main
from picollm.core.commands import run_cli

if __name__ == "__main__":
    run_cli(main)
