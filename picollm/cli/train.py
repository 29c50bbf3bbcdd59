#!/usr/bin/env python
"""Train every model family (or --models ...) on one shared config and print a table per family.

    python main.py --corpus tinyshakespeare --max_steps 500
    python main.py --models transformer lstm --device cuda --compile
"""

from __future__ import annotations

import argparse

from picollm.config import add_config_args, config_from_args
from picollm.core.commands import ArgumentParser, run_cli
from picollm.core.log import setup_logging
from picollm.models import FAMILIES, default_families
from picollm.runs.layout import run_summary
from picollm.train.loop import train_run


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=default_families(),
                        help=f"model families to train, in order (choices: {', '.join(FAMILIES)})")
    add_config_args(parser, exclude=("model",))
    return parser.parse_args(argv)


def format_table(rows: list[dict]) -> str:
    """Aligned plain-text table of run summaries."""
    columns = [("model", "family", "{}"), ("params", "params", "{:,}"), ("val_loss", "val loss", "{:.4f}"),
               ("val_ppl", "val ppl", "{:.2f}"), ("val_acc", "val acc", "{:.3f}"),
               ("tokens_per_sec", "tokens/s", "{:,.0f}"), ("train_seconds", "wall s", "{:.1f}"),
               ("status", "status", "{}"), ("run", "run", "{}")]
    cells = [[title for _, title, _ in columns]]
    for row in rows:
        cells.append([fmt.format(row[key]) if row.get(key) is not None else "-" for key, _, fmt in columns])
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    base = config_from_args(args)
    log_path = setup_logging("main")
    for name in args.models:
        base.replace(model=name)  # validate every family before training any
    rows = []
    for name in args.models:
        run_dir = train_run(base.replace(model=name))
        rows.append(run_summary(run_dir))
    print()
    print(format_table(rows))
    print(f"\nruns in {base.out_dir}/, log in {log_path}")
    return 0 if all(r["status"] == "done" for r in rows) else 1


if __name__ == "__main__":
    run_cli(main)
