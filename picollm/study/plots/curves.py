"""curves_<family>_<corpus>.png: validation loss against step, tokens seen and training seconds, one line
per run, coloured by one setting (--color_by; by default the one that varies most). A run without a readable
metrics.csv is left out with a note (listed with the skipped plots)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import LogNorm

from picollm.core.errors import CheckpointError
from picollm.runs.layout import read_metrics
from picollm.study.common import LABELS, Skip
from picollm.study.plots.base import Plot, PlotInput, save_figure
from picollm.study.plots.scales import color_scale, draw_color_key
from picollm.study.varying import default_color_by

#: the three x axes of a learning-curve figure: metrics.csv column, axis label
CURVE_X = [("step", "training step (count)"), ("tokens_seen", "tokens seen (count)"),
           ("elapsed_sec", "training time (s)")]


def corpus_slug(corpus: Any) -> str:
    """A corpus as a file-name part: its name, or a local file's stem plus a hash of its path (stems collide)."""
    text = str(corpus)
    if "/" in text or "\\" in text or text.endswith(".txt"):
        digest = hashlib.sha256(text.encode()).hexdigest()[:6]
        text = f"{Path(text).stem}-{digest}"
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text) or "unknown"


def corpora(df: pd.DataFrame, family: str) -> list[str]:
    """The corpora a family's runs trained on, sorted ('unknown' for a run without one)."""
    runs = df[df["model"] == family]
    names = runs["corpus"].fillna("unknown").astype(str) if "corpus" in runs else pd.Series("unknown", runs.index)
    return sorted(names.unique())


def resolve_run_dir(run_dir: Any, analysis_dir: Path) -> Path | None:
    """A run's directory as the table records it: absolute, relative to the working directory, or relative to
    the analysis directory's parent (checkpoints/ and analysis_runs/ side by side); None when none exists."""
    if not isinstance(run_dir, str) or not run_dir.strip():
        return None
    path = Path(run_dir)
    for candidate in ([path] if path.is_absolute() else [path, Path(analysis_dir).resolve().parent / path]):
        if candidate.is_dir():
            return candidate
    return None


def load_curves(runs: pd.DataFrame, analysis_dir: Path) -> tuple[dict[Any, pd.DataFrame], dict[str, str]]:
    """Each run's metrics.csv (index of runs -> frame), and a one-line reason per run left out."""
    curves, missing = {}, {}
    for i, row in runs.iterrows():
        path = resolve_run_dir(row.get("run_dir"), analysis_dir)
        if path is None:
            recorded = row.get("run_dir")
            missing[str(row["run"])] = (f"run directory {recorded} not found (runs.csv moved without its "
                                        "checkpoints?)" if isinstance(recorded, str) and recorded.strip()
                                        else "no run_dir in runs.csv")
            continue
        try:
            metrics = read_metrics(path)
        except CheckpointError as e:
            missing[str(row["run"])] = str(e)
            continue
        curves[i] = metrics.replace([np.inf, -np.inf], np.nan)  # a diverged evaluation is a gap, not a spike
    return curves, missing


@dataclass
class Curves:
    curves: dict[Any, pd.DataFrame]  # index of runs -> its metrics.csv
    runs: pd.DataFrame  # the runs drawn
    color_by: str | None  # the column that colours them (None: nothing varies, each run its own colour)
    title: str


def curves_data(inputs: PlotInput, key: tuple[str, str]) -> Curves:
    family, corpus = key
    df = inputs.runs
    runs = df[(df["model"] == family) & (df["corpus"].fillna("unknown").astype(str) == corpus)]
    if runs.empty:
        raise Skip(f"no {family} runs on {corpus}")
    curves, missing = load_curves(runs, inputs.analysis_dir)
    if not curves:
        first = next(iter(missing.items()))
        more = f" (+{len(missing) - 1} more)" if len(missing) > 1 else ""
        raise Skip(f"no {family} run on {corpus} has a readable metrics.csv: {first[0]}: {first[1]}{more}")
    inputs.notes.update({f"curves[{run}]": reason for run, reason in missing.items()})
    drawn = runs.loc[list(curves)]
    column, why = curve_color(drawn, family, inputs.color_by)
    return Curves(curves, drawn, column, f"{family} on {corpus}: validation loss, {len(curves)} run(s){why}")


def curve_color(runs: pd.DataFrame, family: str, color_by: str | None) -> tuple[str | None, str]:
    """The column to colour by and a note for the title when the user's choice does not apply."""
    if color_by and (color_by not in runs.columns or runs[color_by].isna().all()):
        fallback = default_color_by(runs, family)
        return fallback, f"\n({color_by} is not set for {family}; coloured by {fallback or 'run'} instead)"
    return (color_by or default_color_by(runs, family)), ""


def draw(data: Curves, paths: list[Path]) -> list[Path]:
    save_figure(curves_figure(data.curves, data.runs, data.color_by, data.title), paths[0])
    return paths


def curves_figure(curves: dict[Any, pd.DataFrame], runs: pd.DataFrame, color_by: str | None, title: str) -> plt.Figure:
    """Three panels (x = step, tokens seen, training seconds), one line per run, coloured by `color_by`."""
    if color_by is None:  # nothing varies: tell the runs apart by name
        scale = color_scale(runs["run"].astype(str), "run")
        key = "run"
    else:
        scale = color_scale(runs[color_by], color_by)
        key = LABELS.get(color_by, color_by) + (" [log scale]" if isinstance(scale.norm, LogNorm) else "")
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6), sharey=True, layout="constrained")
    for ax, (x, label) in zip(axes, CURVE_X):
        for i, metrics in curves.items():
            if x in metrics.columns:
                ax.plot(metrics[x], metrics["val_loss"], color=scale.colors[i], lw=1.6, alpha=0.85,
                        marker="o", markersize=3)
        if not any(x in m.columns for m in curves.values()):
            ax.text(0.5, 0.5, f"no run recorded {x}", transform=ax.transAxes, ha="center", color="grey")
        ax.set(xlabel=label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(LABELS["val_loss"])
    _zoom_on_training(axes[0], curves)
    draw_color_key(fig, axes, scale, key)
    fig.suptitle(title)
    return fig


def _zoom_on_training(ax: plt.Axes, curves: dict[Any, pd.DataFrame]) -> None:
    """Clip the y axis just above the first trained evaluation: the untrained loss (step 0) sits far above
    every later point and would squeeze the differences between runs into a sliver."""
    trained = [m.loc[m["step"] > 0, "val_loss"] for m in curves.values() if "step" in m.columns]
    values = pd.concat(trained).dropna() if trained else pd.Series(dtype=float)
    if values.empty:
        return
    low, high = values.min(), values.max()
    pad = 0.08 * (high - low) if high > low else 0.1 * abs(high) or 0.1
    ax.set_ylim(low - pad, high + 3 * pad)


def keys(inputs: PlotInput, family: str) -> list[tuple[str, Any]]:
    return [(f"curves_{family}_{corpus_slug(corpus)}", (family, corpus)) for corpus in corpora(inputs.runs, family)]


def files(key: tuple[str, str]) -> list[str]:
    return [f"curves_{key[0]}_{corpus_slug(key[1])}.png"]


def plot_curves(df: pd.DataFrame, family: str, corpus: str, analysis_dir: Path, out: Path,
                color_by: str | None = None, notes: dict[str, str] | None = None) -> list[Path]:
    """curves_<family>_<corpus>.png; runs without a readable metrics.csv are left out with a note each."""
    inputs = PlotInput(df, Path(analysis_dir), color_by=color_by, notes={} if notes is None else notes)
    return PLOT.render(inputs, (family, corpus), Path(out))


PLOT = Plot("curves", "Learning curves", "curves_", data=curves_data, draw=draw, files=files, keys=keys,
            per_family=True)
