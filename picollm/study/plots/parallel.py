"""parallel_<family>.png: parallel coordinates, one axis per setting that varies across a family's runs and
then validation loss; one line per run, coloured by its validation loss."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import Normalize

from picollm.study.common import LABELS, Skip, numeric
from picollm.study.plots.base import Plot, PlotInput, save_figure
from picollm.study.plots.scales import LINE_CMAP, nice_ticks
from picollm.study.varying import fmt_value, is_categorical, levels, log_scaled, varying_settings


@dataclass
class ParallelAxis:
    """One vertical axis: each run's position on it in [0, 1], its tick positions and labels, its scale."""

    name: str
    positions: pd.Series
    ticks: list[tuple[float, str]]
    scale: str  # "linear", "log" or "categorical"


def parallel_axis(values: pd.Series, name: str) -> ParallelAxis:
    """Levels evenly spaced and labelled; numbers scaled to [0, 1], on a log scale when log_scaled()."""
    if is_categorical(values, name) or values.isna().any():
        distinct = levels(values)
        spots = np.linspace(0, 1, len(distinct)) if len(distinct) > 1 else np.array([0.5])
        where = {fmt_value(level): float(s) for level, s in zip(distinct, spots)}
        positions = values.map(lambda v: where[fmt_value(v)])
        return ParallelAxis(name, positions, [(p, label) for label, p in where.items()], "categorical")
    numbers = pd.to_numeric(values).astype(float)
    log = log_scaled(numbers, name)
    scaled = np.log10(numbers) if log else numbers
    low, high = scaled.min(), scaled.max()
    span = high - low if high > low else 1.0
    positions = (scaled - low) / span if high > low else scaled * 0 + 0.5
    distinct = sorted(numbers.unique())
    where = lambda m: float(((np.log10(m) if log else m) - low) / span) if high > low else 0.5
    ticks = [(where(m), fmt_value(m)) for m in nice_ticks(numbers.min(), numbers.max(), log, distinct)]
    if len(distinct) > 6:  # round numbers inside, and the ends labelled with the values the runs reach
        inner = [(p, label) for p, label in ticks if 0.08 < p < 0.92]
        ticks = [(0.0, fmt_value(distinct[0]))] + inner + [(1.0, fmt_value(distinct[-1]))]
    return ParallelAxis(name, positions, ticks, "log" if log else "linear")


def parallel_table(df: pd.DataFrame, family: str) -> tuple[list[ParallelAxis], pd.Series]:
    """The axes of a family's parallel-coordinates plot (its varying settings, then val loss) and val loss."""
    runs = df[df["model"] == family].assign(val_loss=lambda d: numeric(d, "val_loss")).dropna(subset=["val_loss"])
    if len(runs) < 2:
        raise Skip(f"{len(runs)} {family} run(s) with a val_loss; parallel coordinates need at least 2")
    settings = varying_settings(runs, family)
    if not settings:
        raise Skip(f"no setting varies across the {len(runs)} {family} runs")
    axes = [parallel_axis(runs[name], name) for name in settings]
    axes.append(parallel_axis(runs["val_loss"], "val_loss"))
    return axes, runs["val_loss"]


@dataclass
class Parallel:
    family: str
    axes: list[ParallelAxis]  # the varying settings, then val loss
    loss: pd.Series  # val loss per run drawn
    left_out: int  # the family's runs without a val loss


def parallel(inputs: PlotInput, family: str) -> Parallel:
    axes, loss = parallel_table(inputs.runs, family)
    return Parallel(family, axes, loss, int((inputs.runs["model"] == family).sum()) - len(loss))


def draw(data: Parallel, paths: list[Path]) -> list[Path]:
    """Drawn with matplotlib rather than pandas.plotting.parallel_coordinates, which puts every column on one
    shared linear scale, colours by class instead of by a number, and cannot label levels or use a log axis;
    plotly would need a browser engine to render a static PNG."""
    axes, loss = data.axes, data.loss
    norm = Normalize(loss.min(), loss.max()) if loss.max() > loss.min() else Normalize(loss.min() - 1, loss.max() + 1)
    cmap = LINE_CMAP
    fig, ax = plt.subplots(figsize=(max(6.0, 1.9 * len(axes) + 1.5), 5.2), layout="constrained")
    xs = np.arange(len(axes))
    for i in loss.sort_values(ascending=False).index:  # the best runs drawn last, on top
        ax.plot(xs, [a.positions[i] for a in axes], color=cmap(norm(loss[i])), lw=1.8, alpha=0.85)
    for x, a in zip(xs, axes):
        ax.axvline(x, color="black", lw=1)
        right = x == xs[-1]  # the val-loss axis is labelled outside, where no line crosses
        for pos, label in a.ticks:
            ax.plot([x - 0.02, x + 0.02], [pos, pos], color="black", lw=1)
            ax.text(x + (0.04 if right else -0.04), pos, label, ha="left" if right else "right", va="center", fontsize=8,
                    bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8})
    names = [LABELS.get(a.name, a.name) + {"log": "\n[log scale]", "categorical": "\n[levels]"}.get(a.scale, "")
             for a in axes]
    ax.set_xticks(xs, names)
    ax.set_yticks([])
    ax.set_xlim(-0.45, len(axes) - 0.55)
    ax.set_ylim(-0.06, 1.06)
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)
    bar = fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, pad=0.01, fraction=0.04)
    bar.set_label(LABELS["val_loss"] + ", lower is better")
    note = f"; {data.left_out} run(s) without a val_loss left out" if data.left_out else ""
    ax.set_title(f"{data.family}: settings -> validation loss, {len(loss)} run(s){note}")
    save_figure(fig, paths[0])
    return paths


PLOT = Plot("parallel", "Parallel coordinates", "parallel_", data=parallel, draw=draw, per_family=True,
            files=lambda family: [f"parallel_{family}.png"])
