"""The plot registry: every figure and table the study writes into analysis_runs/plots/ is one Plot.

A Plot is a name, the report's section it appears under (group), the prefix every file it writes starts with
(the report files a PNG under its plot's section by it), and its steps:

    keys(inputs, family) -> [(name, key)]  the instances drawn; name is how skipped.txt names one
    files(key) -> [file names]             what an instance writes, in order
    data(inputs, key) -> what is drawn     pandas/numpy only, testable without a figure; raises Skip
    draw(data, paths) -> paths written     the figure and tables, into paths = [out / f for f in files(key)]

The table-wide plots are drawn first, in registry order; then, family by family, every per-family plot
(per_family=True), so one family's comparisons sit together. A key that is a Skip is listed as skipped
without drawing (how the regressions name the groups their fits skipped).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.pyplot as plt
import pandas as pd

from picollm.study.common import families, family_order
from picollm.study.stats import OLSFit

#: the report's sections, in the order it shows them; a plot registered under a new title adds it at the end
GROUPS: list[str] = ["Learning curves", "Pareto fronts", "Hyperparameter importance", "Parallel coordinates",
                     "Heatmaps", "Distributions", "Regressions", "Correlations"]
STYLE = {"font.size": 11, "axes.titlesize": 13, "axes.labelsize": 11, "legend.fontsize": 9,
         "figure.dpi": 100, "savefig.bbox": "tight"}


@dataclass
class PlotInput:
    """What every plot is drawn from: the runs table, and what summarize works out once for all plots."""

    runs: pd.DataFrame
    analysis_dir: Path
    fits: dict[str, OLSFit] = field(default_factory=dict)  # the regressions, fitted before anything is drawn
    fit_skips: dict[str, str] = field(default_factory=dict)  # "regression[group]" -> why that group has no fit
    color_by: str | None = None  # --color_by: the column that colours the learning-curve overlays
    notes: dict[str, str] = field(default_factory=dict)  # runs a plot was drawn without: listed after the skips


@dataclass(frozen=True)
class Plot:
    """One registered plot (the module docstring says what each step does)."""

    name: str
    group: str
    prefix: str
    data: Callable[[PlotInput, Any], Any]
    draw: Callable[[Any, list[Path]], list[Path]]
    files: Callable[[Any], list[str]]
    keys: Callable[[PlotInput, str | None], Iterable[tuple[str, Any]]] | None = None
    per_family: bool = False

    def instances(self, inputs: PlotInput, family: str | None = None) -> list[tuple[str, Any]]:
        """(name, key) of each instance; by default one, named after the plot (and the family)."""
        if self.keys is not None:
            return list(self.keys(inputs, family))
        return [(f"{self.name}_{family}", family)] if self.per_family else [(self.name, None)]

    def render(self, inputs: PlotInput, key: Any, out: Path) -> list[Path]:
        """Draw one instance into out; returns the files written."""
        return self.draw(self.data(inputs, key), [out / name for name in self.files(key)])


#: every plot, in the order summarize draws them. Add one with register_plot().
PLOTS: dict[str, Plot] = {}


def register_plot(plot: Plot) -> Plot:
    """Add a plot (or replace the one of that name): summarize draws it, the report shows its PNGs under its
    group, and the tests expect its files."""
    PLOTS[plot.name] = plot
    if plot.group not in GROUPS:
        GROUPS.append(plot.group)
    return plot


def unregister_plot(name: str) -> None:
    PLOTS.pop(name, None)


def plot_instances(inputs: PlotInput) -> Iterator[tuple[Plot, str, Any]]:
    """Every (plot, name, key) to draw, in order: the table-wide plots, then each family's."""
    for plot in [p for p in PLOTS.values() if not p.per_family]:
        for name, key in plot.instances(inputs):
            yield plot, name, key
    for family in families(inputs.runs):
        for plot in [p for p in PLOTS.values() if p.per_family]:
            for name, key in plot.instances(inputs, family):
                yield plot, name, key


def group_of(file_name: str) -> str | None:
    """The report section of a file in plots/: the group of the plot whose prefix it starts with."""
    return next((plot.group for plot in PLOTS.values() if file_name.startswith(plot.prefix)), None)


# --------------------------------------------------------------------------------------------------
# what the draw steps share
# --------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def headless() -> Iterator[None]:
    """Draw with the Agg backend (never a window, never a display). Chosen here, where figures are drawn,
    rather than when picollm.study is imported, and the backend in use before is restored after."""
    before = matplotlib.get_backend(auto_select=False)  # None: none chosen yet (none is resolved here)
    switch = before is None or before.lower() != "agg"
    if switch:
        plt.switch_backend("Agg")
    try:
        yield
    finally:
        if switch and before is not None:
            plt.switch_backend(before)


def family_colors(present: list[str]) -> dict[str, Any]:
    """One fixed colour per family, the same in every plot: by registry order, then the families present."""
    palette = plt.get_cmap("tab10").colors
    names = family_order() + [f for f in present if f not in family_order()]
    return {name: palette[i % len(palette)] for i, name in enumerate(names)}


def save_figure(fig: plt.Figure, path: Path) -> None:
    fig.savefig(path)
    plt.close(fig)
