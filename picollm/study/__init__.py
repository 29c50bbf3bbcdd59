"""The cross-run study: statistics (Pareto fronts, regressions), the plots, and the static HTML report."""
