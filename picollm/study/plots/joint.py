"""joint_kde_token_accuracy_vs_val_loss.png: token accuracy against validation loss by family, as densities
(a scatter and a rug for a family too thin for one)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from picollm.core.log import get_logger
from picollm.study.common import LABELS, Skip, families, numeric
from picollm.study.plots.base import Plot, PlotInput, family_colors, save_figure

log = get_logger()

X, Y = "val_loss", "token_accuracy"


@dataclass
class JointData:
    runs: pd.DataFrame  # the runs with both numbers
    families: list[str]  # every family of the table (for its colour)


def joint_data(inputs: PlotInput, key: None) -> JointData:
    df = inputs.runs
    d = df.assign(**{X: numeric(df, X), Y: numeric(df, Y)}).dropna(subset=[X, Y])
    if d.empty:
        raise Skip(f"no run has both {X} and {Y}")
    return JointData(d, families(df))


def _kde_ok(x: pd.Series, y: pd.Series) -> bool:
    """A 2-D KDE needs >= 3 points and a non-singular covariance (KDE raises otherwise)."""
    if len(x) < 3 or x.std() == 0 or y.std() == 0:
        return False
    cov = np.cov(np.vstack([x, y]))
    return bool(np.isfinite(cov).all() and np.linalg.det(cov) > 1e-12 * cov[0, 0] * cov[1, 1])


def draw(data: JointData, paths: list[Path]) -> list[Path]:
    import seaborn as sns  # heavy (scipy): loaded only where a figure needs it

    d, colors = data.runs, family_colors(data.families)
    g = sns.JointGrid(height=6.5)
    fallback = []
    for fam in families(d):
        part = d[d["model"] == fam]
        if _kde_ok(part[X], part[Y]):
            try:
                sns.kdeplot(x=part[X], y=part[Y], ax=g.ax_joint, color=colors[fam], levels=5, alpha=0.6, gridsize=60,
                            warn_singular=False)
                sns.kdeplot(x=part[X], ax=g.ax_marg_x, color=colors[fam], fill=True, alpha=0.3, warn_singular=False)
                sns.kdeplot(y=part[Y], ax=g.ax_marg_y, color=colors[fam], fill=True, alpha=0.3, warn_singular=False)
            except (np.linalg.LinAlgError, ValueError):
                fallback.append(fam)
        else:
            fallback.append(fam)
        if fam in fallback:  # too few points or no spread for a density: show them as a rug instead
            sns.rugplot(x=part[X], ax=g.ax_marg_x, color=colors[fam], height=0.5)
            sns.rugplot(y=part[Y], ax=g.ax_marg_y, color=colors[fam], height=0.5)
        g.ax_joint.scatter(part[X], part[Y], s=22, color=colors[fam], label=fam + (" (scatter)" if fam in fallback else ""))
    g.ax_joint.set(xlabel=LABELS[X], ylabel=LABELS[Y])
    g.ax_joint.legend(loc="best")
    g.figure.suptitle("Token accuracy vs validation loss by family (KDE)", y=1.02)
    if fallback:
        log.info(f"jointplot: scatter instead of KDE for {', '.join(fallback)} (< 3 runs or no spread)")
    save_figure(g.figure, paths[0])
    return paths


PLOT = Plot("joint_kde", "Distributions", "joint_", data=joint_data, draw=draw,
            files=lambda key: [f"joint_kde_{Y}_vs_{X}.png"])
