"""pareto_val_loss_vs_<x>.png / .csv: validation loss against accuracy, size and training time, every run
by family with the Pareto frontier ringed and named; the .csv holds the frontier's runs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd

from picollm.study.common import LABELS, Skip, families, numeric
from picollm.study.plots.base import Plot, PlotInput, family_colors, save_figure
from picollm.study.stats import pareto_frontier

Y = "val_loss"  # always minimised
#: (x column, minimise x?) of the three frontiers against val loss
PARETO_PAIRS = [("token_accuracy", False), ("params", True), ("train_seconds", True)]
#: the frontier's columns in the .csv (those runs.csv has)
FRONT_COLUMNS = ["run", "model", "params", "token_accuracy", "train_seconds", "embed", "hidden", "layers", "heads",
                 "k", "learning_rate"]


@dataclass
class Frontier:
    x: str
    minimize_x: bool
    runs: pd.DataFrame  # the runs with both x and val loss, those two as numbers
    front: pd.DataFrame  # the frontier's rows of runs.csv, sorted by x
    families: list[str]  # every family of the table (for its colour)


def keys(inputs: PlotInput, family: str | None) -> list[tuple[str, Any]]:
    return [(f"pareto_{Y}_vs_{x}", (x, minimize_x)) for x, minimize_x in PARETO_PAIRS]


def files(key: tuple[str, bool]) -> list[str]:
    return [f"pareto_{Y}_vs_{key[0]}.png", f"pareto_{Y}_vs_{key[0]}.csv"]


def frontier(inputs: PlotInput, key: tuple[str, bool]) -> Frontier:
    x, minimize_x = key
    df = inputs.runs
    xs, ys = numeric(df, x), numeric(df, Y)
    ok = xs.notna() & ys.notna()
    if not ok.any():
        raise Skip(f"no run has both {x} and {Y}")
    front = pareto_frontier(df[ok], x, Y, minimize_x=minimize_x)
    return Frontier(x, minimize_x, df[ok].assign(**{x: xs[ok], Y: ys[ok]}), front, families(df))


def draw(data: Frontier, paths: list[Path]) -> list[Path]:
    x, runs, front = data.x, data.runs, data.front
    colors = family_colors(data.families)
    fig, ax = plt.subplots(figsize=(8, 5.5))
    for fam in families(runs):
        part = runs[runs["model"] == fam]
        ax.scatter(part[x], part[Y], s=36, alpha=0.75, color=colors[fam], label=fam)
    fx, fy = numeric(front, x), numeric(front, Y)
    ax.plot(fx, fy, "--", color="black", lw=1.2, alpha=0.7, label="Pareto frontier")
    ax.scatter(fx, fy, s=90, facecolors="none", edgecolors="black", lw=1.4)
    for _, row in front.iterrows():
        ax.annotate(str(row["run"]), (row[x], row[Y]), textcoords="offset points", xytext=(5, 5), fontsize=8)
    if x in ("params", "train_seconds") and (runs[x] > 0).all():
        ax.set_xscale("log")
    better = "lower" if data.minimize_x else "higher"
    ax.set(xlabel=LABELS.get(x, x) + (" [log scale]" if ax.get_xscale() == "log" else ""), ylabel=LABELS[Y],
           title=f"Pareto frontier: {Y} (lower is better) vs {x} ({better} is better)")
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    png, csv = paths
    save_figure(fig, png)
    cols = [c for c in [*FRONT_COLUMNS[:2], x, Y, *FRONT_COLUMNS[2:]] if c in front.columns]
    front[list(dict.fromkeys(cols))].to_csv(csv, index=False)
    return [png, csv]


PLOT = Plot("pareto", "Pareto fronts", "pareto_", data=frontier, draw=draw, files=files, keys=keys)
