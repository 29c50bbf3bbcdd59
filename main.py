#!/usr/bin/env python
"""Train every model family (or --models ...) on one shared config: the same command as `picollm train`.

    python main.py --corpus tinyshakespeare --max_steps 500
    python main.py --models transformer lstm --device cuda --compile
"""

from picollm.cli.train import main
from picollm.core.commands import run_cli

if __name__ == "__main__":
    run_cli(main)
