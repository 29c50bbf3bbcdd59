"""box_val_loss_by_family.png and box_val_loss_by_activation.png: validation loss by family and by activation,
boxes with every run on top."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd

from picollm.study.common import LABELS, Skip, families, numeric
from picollm.study.plots.base import Plot, PlotInput, save_figure

#: (name in skipped.txt, the column the boxes split by)
BOXES = [("box_by_activation", "activation"), ("box_by_family", "model")]


@dataclass
class Boxes:
    by: str
    runs: pd.DataFrame  # the runs with a val loss and a `by`, which is text
    order: list[str]  # the boxes, left to right


def _what(by: str) -> str:
    return "family" if by == "model" else by


def boxes(inputs: PlotInput, by: str) -> Boxes:
    df = inputs.runs
    if by not in df.columns:
        raise Skip(f"runs.csv has no {by} column")
    d = df.assign(val_loss=numeric(df, "val_loss")).dropna(subset=["val_loss", by])
    if d.empty:
        raise Skip(f"no run has both {by} and val_loss")
    d = d.assign(**{by: d[by].astype(str)})
    order = [f for f in families(d)] if by == "model" else sorted(d[by].unique())
    return Boxes(by, d, order)


def draw(data: Boxes, paths: list[Path]) -> list[Path]:
    import seaborn as sns  # heavy (scipy): loaded only where a figure needs it

    by, d, order = data.by, data.runs, data.order
    fig, ax = plt.subplots(figsize=(max(5.0, 1.6 * len(order) + 2), 5))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # seaborn 0.13 passes matplotlib's deprecated vert=
        sns.boxplot(data=d, x=by, y="val_loss", order=order, ax=ax, color="lightsteelblue", showfliers=False)
    sns.stripplot(data=d, x=by, y="val_loss", order=order, ax=ax, color="black", size=4, alpha=0.7)
    counts = d[by].value_counts()
    ax.set_xticks(range(len(order)), [f"{o}\n(n={counts[o]})" for o in order])
    what = _what(by)
    ax.set(xlabel=what, ylabel=LABELS["val_loss"], title=f"Validation loss by {what}")
    ax.grid(axis="y", alpha=0.3)
    save_figure(fig, paths[0])
    return paths


def keys(inputs: PlotInput, family: str | None) -> list[tuple[str, Any]]:
    return BOXES


PLOT = Plot("box", "Distributions", "box_", data=boxes, draw=draw, keys=keys,
            files=lambda by: [f"box_val_loss_by_{_what(by)}.png"])
