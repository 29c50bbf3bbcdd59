"""Train every model family (or --models ...) on one shared config and print a table per family.

    picollm train --corpus tinyshakespeare --max_steps 500
    picollm train --models transformer lstm --device cuda --compile

(`python main.py ...` is the same command.)
"""

from __future__ import annotations

import argparse

from picollm.config import add_config_args, config_from_args
from picollm.core.commands import ArgumentParser
from picollm.core.log import setup_logging
from picollm.core.text import format_table
from picollm.models import FAMILIES, default_families
from picollm.runs.layout import run_summary


def parse_args(argv: list[str] | None, prog: str | None = None) -> argparse.Namespace:
    parser = ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=default_families(),
                        help=f"model families to train, in order (choices: {', '.join(FAMILIES)})")
    add_config_args(parser, exclude=("model",))
    return parser.parse_args(argv)


def summary_table(rows: list[dict]) -> str:
    """Aligned plain-text table of run summaries."""
    columns = [("model", "family", "{}"), ("params", "params", "{:,}"), ("val_loss", "val loss", "{:.4f}"),
               ("val_ppl", "val ppl", "{:.2f}"), ("val_acc", "val acc", "{:.3f}"),
               ("tokens_per_sec", "tokens/s", "{:,.0f}"), ("train_seconds", "wall s", "{:.1f}"),
               ("status", "status", "{}"), ("run", "run", "{}")]
    cells = [[fmt.format(row[key]) if row.get(key) is not None else "-" for key, _, fmt in columns] for row in rows]
    return format_table([title for _, title, _ in columns], cells)


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = parse_args(argv, prog)
    base = config_from_args(args)
    log_path = setup_logging("main")
    for name in args.models:
        base.replace(model=name)  # validate every family before training any
    from picollm.train.loop import train_run  # imports torch: not needed for --help or a usage error

    rows = []
    for name in args.models:
        run_dir = train_run(base.replace(model=name))
        rows.append(run_summary(run_dir))
    print()
    print(summary_table(rows))
    print(f"\nruns in {base.out_dir}/, log in {log_path}")
    return 0 if all(r["status"] == "done" for r in rows) else 1
