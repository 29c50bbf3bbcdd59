"""The cross-run study: statistics over every run, the plots, and the static HTML report.

    summarize.py   the stage: load runs.csv, fit the regressions, draw every registered plot into plots/
    stats.py       Pareto frontiers, OLS fits, --formula checks (no matplotlib)
    common.py      what stats, plots and tables share: families in registry order, Skip, axis labels
    varying.py     which settings a family has and varies; how a setting's values read
    plots/         the plot registry (plots/base.py: Plot, PLOTS, register_plot) and one module per plot
    report.py      analysis_runs/index.html (the runs table and the study, grouped by the plots' groups)
    pages.py       one run's page and the HTML pieces the report shares

Adding a plot: write picollm/study/plots/<name>.py with a data step (the runs -> what is drawn, raising
common.Skip with a one-line reason when the data cannot support it), a draw step (that -> its files) and
`PLOT = Plot(name, group, prefix, data=..., draw=..., files=...)`, then add `<name>.PLOT` to the tuple
registered in plots/__init__.py (a plot outside the package calls register_plot itself). summarize draws
it, the report shows its PNGs under its group, and tests/study/test_summarize.py expects every file it declares.
"""
