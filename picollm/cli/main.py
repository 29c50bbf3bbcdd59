"""The `picollm` command: one subcommand per stage of the lab, each in its own module of picollm/cli/.

A subcommand's module is imported only when it runs, and imports torch only once it has something to compute,
so `picollm --help`, `picollm COMMAND --help` and a mistyped flag answer at once.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import NoReturn

from picollm.core.commands import ArgumentParser, run_cli
from picollm.core.version import __version__

#: command -> (its module in picollm.cli, which has main(argv, prog); what it does), in pipeline order
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("train", "train every model family (or --models ...) on one config"),
    "batch": ("batch", "train a search space of runs (a preset or a space file); resumable, parallel"),
    "analyze": ("analyze", "analyse one run: generations, curves, test evaluation, influence"),
    "analyze-all": ("analyze_all", "analyse every run under a folder, in parallel"),
    "summarize": ("summarize", "plots and the HTML report over every analysed run"),
    "pipeline": ("pipeline", "the whole lab in one command: batch, analyze-all, summarize"),
    "generate": ("generate", "generate text from a trained run (greedy, sampling, beam search)"),
    "playground": ("playground", "generate from any run in the browser (needs the playground extra)"),
    "export": ("export", "export runs to other tools (TensorBoard event files)"),
    "xlstm-study": ("xlstm_study", "the xLSTM study: matched-size language models, nearest-neighbour search"),
}
DESCRIPTION = "picollm: a batch-train-then-analyze lab for small language models."


def _commands_help() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {summary}" for name, (_, summary) in COMMANDS.items()]
    return "commands:\n" + "\n".join(lines) + "\n\n`picollm COMMAND --help` shows a command's flags."


def main(argv: list[str] | None = None) -> int:
    """Run `picollm COMMAND ...`: the command's exit code; a usage error exits 2 with one `error:` line."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = ArgumentParser(prog="picollm", usage="picollm [-h] [--version] COMMAND [ARGS ...]",
                            description=DESCRIPTION, epilog=_commands_help(),
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"picollm {__version__}")
    parser.add_argument("command", choices=COMMANDS, metavar="COMMAND", help="one of the commands below")
    if argv and argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version"):
        parser.error(f"unrecognized arguments: {argv[0]} (the command comes first: picollm COMMAND ...)")
    # only the command's name is parsed here: the rest is for the command's own parser
    name = parser.parse_args(argv[:1]).command
    module = importlib.import_module(f"picollm.cli.{COMMANDS[name][0]}")
    return module.main(argv[1:], prog=f"picollm {name}")


def run() -> NoReturn:
    """The installed `picollm` command (and `python -m picollm`)."""
    run_cli(main)
