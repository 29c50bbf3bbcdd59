"""The command-line conventions every command shares: a usage error is one `error:` line (exit 2), a user
mistake (any PicoError) likewise, and Ctrl-C one line (exit 130)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import NoReturn

from picollm.core.errors import PicoError


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
