"""top10.csv / top10.md: the ten runs with the lowest validation loss, their key columns."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from picollm.study.common import Skip, markdown_table, numeric
from picollm.study.plots.base import Plot, PlotInput

TOP_COLUMNS = ["run", "model", "params", "embed", "hidden", "layers", "heads", "k", "learning_rate",
               "val_loss", "val_ppl", "token_accuracy", "test_ppl", "train_seconds", "status"]


def top_runs(df: pd.DataFrame, n: int = 10) -> pd.DataFrame:
    """The n runs with the lowest val loss, key columns only."""
    d = df.assign(val_loss=numeric(df, "val_loss")).dropna(subset=["val_loss"]).sort_values("val_loss")
    return d[[c for c in TOP_COLUMNS if c in d.columns]].head(n).reset_index(drop=True)


def top(inputs: PlotInput, key: None) -> pd.DataFrame:
    table = top_runs(inputs.runs)
    if table.empty:
        raise Skip("no run has a val_loss")
    return table


def draw(table: pd.DataFrame, paths: list[Path]) -> list[Path]:
    csv, md = paths
    table.to_csv(csv, index=False)
    md.write_text(f"# Top {len(table)} runs by validation loss\n\n" + markdown_table(table))
    return paths


PLOT = Plot("top10", "Top runs", "top10", data=top, draw=draw, files=lambda key: ["top10.csv", "top10.md"])
