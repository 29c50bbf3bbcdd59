"""Argument definitions shared by every script, and the error handling around them.

Every RunConfig field becomes a flag with its default and help line, so main.py, batch_train.py and
auto_train_then_analyze.py accept the same settings without copying them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable
from dataclasses import fields
from typing import NoReturn

from picollm.config import RunConfig
from picollm.errors import PicoError
from picollm.settings import add_settings_args


def add_config_args(parser: argparse.ArgumentParser, exclude: Iterable[str] = (), group_title: str = "run settings") -> None:
    """Add one --flag per RunConfig field (default None, so only what the user typed overrides)."""
    add_settings_args(parser, RunConfig, exclude=tuple(exclude), group_title=group_title, override=True)


def config_overrides(args: argparse.Namespace) -> dict:
    """The RunConfig settings the user set explicitly on the command line."""
    names = {f.name for f in fields(RunConfig)}
    return {k: v for k, v in vars(args).items() if k in names and v is not None}


def config_from_args(args: argparse.Namespace, base: RunConfig | None = None) -> RunConfig:
    return (base or RunConfig()).replace(**config_overrides(args)) if base else RunConfig(**config_overrides(args))


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser, whose usage errors are one `error: ...` line (exit 2) like every other user mistake,
    instead of the usage block followed by the error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def run_cli(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> None:
    """Run a script's main(); user mistakes become one line on stderr and exit code 2, not a traceback."""
    try:
        code = main(argv)
    except PicoError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: finished runs are kept; run the same command again to resume", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)
