"""Every plot the study draws, one module each, registered here in the order summarize draws them.

    from picollm.study.plots import PLOTS, register_plot   # name -> Plot; see plots.base for the contract
"""

from picollm.study.plots import (
    box,
    correlation,
    curves,
    heatmap,
    importance,
    joint,
    parallel,
    pareto,
    regressions,
    top,
)
from picollm.study.plots.base import (
    GROUPS,
    PLOTS,
    Plot,
    PlotInput,
    group_of,
    headless,
    plot_instances,
    register_plot,
    unregister_plot,
)

__all__ = ["GROUPS", "PLOTS", "Plot", "PlotInput", "group_of", "headless", "plot_instances", "register_plot",
           "unregister_plot"]

for _plot in (pareto.PLOT, joint.PLOT, regressions.PLOT, box.PLOT, heatmap.PLOT, correlation.PLOT, top.PLOT,
              curves.PLOT, importance.PLOT, parallel.PLOT):
    register_plot(_plot)
