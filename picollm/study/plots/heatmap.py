"""heatmap_<family>_<row>_x_<col>.png: a family's mean validation loss over the two settings its registry
entry names (Family.heatmap_axes), so each is drawn over settings that family really has."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd

from picollm.models import FAMILIES
from picollm.study.common import LABELS, Skip, numeric
from picollm.study.plots.base import Plot, PlotInput, save_figure


@dataclass
class Heatmap:
    family: str
    row: str
    col: str
    table: pd.DataFrame  # mean val loss, rows and columns labelled by their levels


def heatmap_families(df: pd.DataFrame) -> list[str]:
    """Every default family (one without runs is listed as skipped), and any other family that has runs."""
    present = set(df["model"].dropna().astype(str))
    return [name for name, family in FAMILIES.items() if family.default or name in present]


def heatmap_table(df: pd.DataFrame, family: str) -> pd.DataFrame:
    """Mean val loss of `family` over its own two hyperparameters (rows, columns named after them)."""
    row, col = FAMILIES[family].heatmap_axes
    d = df.assign(val_loss=numeric(df, "val_loss"))
    d = d[d["model"] == family]
    if d.empty:
        raise Skip(f"no {family} runs")
    for axis in (row, col):
        if axis not in d.columns or d[axis].isna().all():
            raise Skip(f"{axis} is missing for every {family} run")
    d = d.dropna(subset=[row, col, "val_loss"])
    if d.empty:
        raise Skip(f"no {family} run has {row}, {col} and val_loss")
    return d.pivot_table(index=row, columns=col, values="val_loss", aggfunc="mean")


def _fmt_level(v: Any) -> str:
    return str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)


def heatmap(inputs: PlotInput, family: str) -> Heatmap:
    table = heatmap_table(inputs.runs, family)
    table.index = [_fmt_level(v) for v in table.index]
    table.columns = [_fmt_level(v) for v in table.columns]
    return Heatmap(family, *FAMILIES[family].heatmap_axes, table)


def draw(data: Heatmap, paths: list[Path]) -> list[Path]:
    import seaborn as sns  # heavy (scipy): loaded only where a figure needs it

    table, row, col = data.table, data.row, data.col
    fig, ax = plt.subplots(figsize=(1.2 * len(table.columns) + 3.5, 0.8 * len(table.index) + 2.5))
    sns.heatmap(table, annot=True, fmt=".3f", cmap="viridis_r", ax=ax,
                cbar_kws={"label": "mean " + LABELS["val_loss"]})
    ax.set(xlabel=LABELS.get(col, col), ylabel=LABELS.get(row, row),
           title=f"{data.family}: mean validation loss over {row} x {col}")
    save_figure(fig, paths[0])
    return paths


def keys(inputs: PlotInput, family: str | None) -> list[tuple[str, Any]]:
    return [(f"heatmap_{fam}", fam) for fam in heatmap_families(inputs.runs)]


def files(family: str) -> list[str]:
    row, col = FAMILIES[family].heatmap_axes
    return [f"heatmap_{family}_{row}_x_{col}.png"]


PLOT = Plot("heatmap", "Heatmaps", "heatmap_", data=heatmap, draw=draw, files=files, keys=keys)
