"""What the study's statistics, plots and tables share; no matplotlib here.

The runs table's families in the registry's order, a column as numbers, axis labels with units, the Skip a
plot or fit raises when the data cannot support it, and the one Markdown table writer.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from picollm.models import FAMILIES

#: axis labels with units
LABELS = {"val_loss": "validation loss (nats/token)", "token_accuracy": "validation token accuracy (fraction)",
          "params": "parameters (count)", "train_seconds": "training time (s)", "test_ppl": "test perplexity",
          "embed": "embedding size", "hidden": "hidden size", "k": "context tokens k", "layers": "layers",
          "lr": "learning rate", "learning_rate": "learning rate", "batch_size": "batch size (sequences)",
          "block_size": "context length (tokens)", "dropout": "dropout (probability)", "heads": "heads"}


class Skip(Exception):
    """A plot or fit the data cannot support; the message is the one-line reason."""


def family_order() -> list[str]:
    """Every registered family, in registration order: the order of legends, boxes and colours."""
    return list(FAMILIES)


def families(df: pd.DataFrame) -> list[str]:
    """Families present, in the canonical order (unknown ones last)."""
    present = [str(m) for m in df["model"].dropna().unique()]
    order = family_order()
    return [f for f in order if f in present] + sorted(set(present) - set(order))


def numeric(df: pd.DataFrame, column: str) -> pd.Series:
    """df[column] as numbers (text -> NaN); all NaN when df has no such column."""
    if column not in df.columns:
        return pd.Series(np.nan, index=df.index)
    return pd.to_numeric(df[column], errors="coerce")


def markdown_table(df: pd.DataFrame, floatfmt: str = ".4g") -> str:
    """A GitHub Markdown table, one unpadded line per row (so tables diff line by line); written here rather
    than with pandas' to_markdown, which needs the optional tabulate package and pads every cell."""
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return "" if np.isnan(v) else format(v, floatfmt)
        if isinstance(v, int | np.integer) and not isinstance(v, bool):
            return f"{v:,}"
        return str(v).replace("|", "\\|")

    lines = ["| " + " | ".join(df.columns) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"
