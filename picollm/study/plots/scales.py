"""How a setting is drawn: a colour per run (a legend of levels, or a colour bar for numbers, log for rates)
and where a scale is labelled."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import ListedColormap, LogNorm, Normalize
from matplotlib.ticker import LogLocator, MaxNLocator

from picollm.study.varying import fmt_value, is_categorical, is_nan, levels, log_scaled

#: viridis without its palest yellows, which vanish against a white background
LINE_CMAP = ListedColormap(plt.get_cmap("viridis")(np.linspace(0.0, 0.85, 256)), name="viridis_lines")


def nice_ticks(low: float, high: float, log: bool, distinct: list[float]) -> list[float]:
    """Where to label a scale: at each value when there are few, else at round numbers (1 and 3 times a power
    of ten on a log scale) inside [low, high]."""
    if len(distinct) <= 6:
        return [float(v) for v in distinct]
    # within one decade a log locator has no powers of ten to mark: round numbers serve as well there
    locator = LogLocator(subs=(1.0, 3.0)) if log and high > 10 * low else MaxNLocator(5)
    inside = [float(t) for t in locator.tick_values(low, high) if low <= t <= high]
    inside = inside[::-(-len(inside) // 6)]  # at most 6 labels
    return inside if len(inside) >= 2 else [float(low), float(high)]


@dataclass
class ColorScale:
    """How runs are coloured by one column: a colour per run, and a legend (levels) or a colour bar (norm)."""

    column: str
    colors: dict[Any, Any]  # run index -> RGBA
    levels: dict[str, Any] | None = None  # categorical: level label -> colour
    norm: Normalize | None = None  # numeric: drawn as a colour bar
    cmap: Any = None
    ticks: list[float] | None = None


def color_scale(values: pd.Series, column: str) -> ColorScale:
    """Colours for `values` (indexed by run): levels from tab10, numbers on viridis (log for rates)."""
    grey = (0.6, 0.6, 0.6, 1.0)
    distinct = levels(values)
    if is_categorical(values, column) or len([d for d in distinct if not is_nan(d)]) < 2:
        palette = plt.get_cmap("tab10").colors
        legend = {fmt_value(level): grey if is_nan(level) else palette[i % len(palette)]
                  for i, level in enumerate(distinct)}
        colors = {i: legend[fmt_value(v)] for i, v in values.items()}
        return ColorScale(column, colors, levels=legend)
    numbers = pd.to_numeric(values, errors="coerce")
    low, high = numbers.min(), numbers.max()
    norm = LogNorm(low, high) if log_scaled(numbers, column) else Normalize(low, high)
    cmap = LINE_CMAP
    colors = {i: grey if np.isnan(v) else cmap(norm(v)) for i, v in numbers.items()}
    finite = [d for d in distinct if not is_nan(d)]
    return ColorScale(column, colors, norm=norm, cmap=cmap,
                      ticks=nice_ticks(low, high, isinstance(norm, LogNorm), finite))


def draw_color_key(fig: plt.Figure, axes: Any, scale: ColorScale, title: str) -> None:
    """A colour bar for a numeric setting, a legend for levels; ticks at the values when there are few."""
    if scale.norm is not None:
        mappable = plt.cm.ScalarMappable(norm=scale.norm, cmap=scale.cmap)
        bar = fig.colorbar(mappable, ax=axes, pad=0.02, fraction=0.04)
        bar.set_label(title)
        if scale.ticks:
            bar.set_ticks(scale.ticks, labels=[fmt_value(t) for t in scale.ticks])
            bar.minorticks_off()
    else:
        handles = [plt.Line2D([], [], color=c, lw=2.5, label=level) for level, c in scale.levels.items()]
        fig.legend(handles=handles, title=title, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
