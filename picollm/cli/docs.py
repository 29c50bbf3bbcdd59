"""docs/cli.md: every command's `--help`, rendered to Markdown by the commands' own parsers.

The flags are declared once (the settings dataclasses, through each command's parser), so the reference is
their `--help` text, captured at a fixed width; tests/cli/test_docs_cli.py fails when docs/cli.md is stale.

    python -m picollm.cli.docs           # write docs/cli.md
    python -m picollm.cli.docs --check   # exit 1 if docs/cli.md is not what this writes now
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from pathlib import Path

from picollm.cli.main import COMMANDS
from picollm.cli.main import main as picollm_main

CLI_DOC = Path(__file__).resolve().parents[2] / "docs" / "cli.md"
REGENERATE = "python -m picollm.cli.docs"
#: the width argparse wraps the help at, whatever the terminal: the file must not depend on who wrote it
HELP_COLUMNS = "100"
#: commands whose parser has subcommands, each with a --help of its own
SUBCOMMANDS: dict[str, tuple[str, ...]] = {"export": ("tensorboard",), "xlstm-study": ("lm", "nn")}


def help_text(argv: list[str]) -> str:
    """What `picollm ARGV --help` prints, wrapped at HELP_COLUMNS columns."""
    out = io.StringIO()
    saved = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = HELP_COLUMNS
    try:
        with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
            picollm_main([*argv, "--help"])
    finally:
        if saved is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = saved
    return out.getvalue().rstrip() + "\n"


def render() -> str:
    """docs/cli.md: `picollm --help`, then every command's (and subcommand's) `--help`, in pipeline order."""
    sections = ["# The `picollm` command: every flag\n",
                f"Generated from the commands' own `--help` (`{REGENERATE}`; do not edit by hand). The flags are "
                "declared once, in the settings dataclasses (`RunConfig`, `BatchSettings`, `DecodeConfig`, ...), "
                "which give both this page and `--help`.\n",
                "## `picollm`\n", "```\n" + help_text([]) + "```\n"]
    for name in COMMANDS:
        for argv in ([name], *([name, sub] for sub in SUBCOMMANDS.get(name, ()))):
            sections += [f"## `picollm {' '.join(argv)}`\n", "```\n" + help_text(list(argv)) + "```\n"]
    return "\n".join(sections)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    text = render()
    if argv == ["--check"]:
        if CLI_DOC.exists() and CLI_DOC.read_text(encoding="utf-8") == text:
            return 0
        print(f"{CLI_DOC} is out of date: run `{REGENERATE}`", file=sys.stderr)
        return 1
    CLI_DOC.write_text(text, encoding="utf-8")
    print(f"wrote {CLI_DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
