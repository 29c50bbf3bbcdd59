"""All runs at once: Pareto frontiers, regressions, comparisons and tables from analysis_runs/runs.csv.

    summarize("analysis_runs")  ->  analysis_runs/plots/*.png, *.csv, *.md, regression_summary.txt, skipped.txt

The plots are the registry's (picollm.study.plots.PLOTS), drawn in its order. Every plot is drawn
independently: one that the data cannot support (a single run, a single family, a column that is all NaN)
is skipped with a one-line reason, logged and listed in plots/skipped.txt, and the others are still drawn.
Headless (the Agg backend, chosen while drawing).
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from picollm.core.errors import PicoError
from picollm.core.log import get_logger
from picollm.runs.table import DB_NAME, TABLE_NAME, export_table, read_table
from picollm.study.common import Skip, families
from picollm.study.plots import PlotInput, headless, plot_instances
from picollm.study.plots.base import STYLE
from picollm.study.report import write_report
from picollm.study.stats import DEFAULT_FORMULA, check_formula, regressions
from picollm.study.varying import check_color_by

log = get_logger()

#: columns the summary cannot do without: every plot is of val_loss, per run and family; the rest are optional
REQUIRED_COLUMNS = ("run", "model", "val_loss")
STAMP = ".summary_stamp"  # sha256 of the runs.csv + formula the plots were drawn from


def add_summary_args(parser: argparse.ArgumentParser) -> None:
    """The summary stage's flags (total_summary_analysis.py and auto_train_then_analyze.py)."""
    parser.add_argument("--analysis_dir", default="analysis_runs",
                        help="directory holding runs.csv; plots go to <dir>/plots (default: analysis_runs)")
    parser.add_argument("--formula", default=None,
                        help=f"statsmodels OLS formula fitted per family and pooled (default: {DEFAULT_FORMULA!r})")
    parser.add_argument("--color_by", default=None, metavar="COLUMN",
                        help="setting (or metric) of runs.csv that colours the learning-curve overlays, "
                             "e.g. lr, embed, activation (default: per family, the setting with the most distinct "
                             "values; ties go to lr, then the model sizes)")


def load_summary(analysis_dir: Path | str) -> pd.DataFrame:
    """runs.csv as a frame, checked row by row; a one-line PicoError when it is bad or holds no runs."""

    path = Path(analysis_dir) / TABLE_NAME
    if (path.parent / DB_NAME).exists():
        export_table(path.parent)  # the csv people open beside the plots shows the rows the plots were drawn from
    if not path.exists():
        raise PicoError(f"{path} not found; run analyze_all_checkpoints.py first (or pass --analysis_dir)")
    df = read_table(path, required=REQUIRED_COLUMNS)
    if df.empty:
        raise PicoError(f"{path} holds no runs; train and analyse some first (auto_train_then_analyze.py)")
    df["learning_rate"] = df["learning_rate"].fillna(df["lr"])  # tables written before learning_rate had only lr
    # inf (a diverged run) would poison means and fits: treat it as missing
    return df.replace([np.inf, -np.inf], np.nan)


def check_summary_inputs(analysis_dir: Path | str, formula: str | None = None, color_by: str | None = None) -> None:
    """What summarize will be given, checked before the stages ahead of it (training, analysis) start: a user
    formula and --color_by, and the table in analysis_dir when one is there already (the analysis adds rows)."""
    if formula:
        check_formula(formula)
    check_color_by(color_by)
    path = Path(analysis_dir) / TABLE_NAME
    if path.exists():
        read_table(path, required=REQUIRED_COLUMNS)


def draw_plots(inputs: PlotInput, out: Path) -> tuple[list[Path], dict[str, str]]:
    """Every registered plot into out: (files written, {plot: why it was skipped}), runs left out last."""
    written: list[Path] = []
    skipped: dict[str, str] = {}
    with headless():
        for plot, name, key in plot_instances(inputs):
            if isinstance(key, Skip):  # known before drawing (a regression group without a fit)
                skipped[name] = str(key)
                continue
            try:
                with plt.rc_context(STYLE):
                    written.extend(plot.render(inputs, key, out))
            except Skip as e:
                skipped[name] = str(e)
            except Exception as e:  # a plotting bug must not cost the other plots; say what happened
                skipped[name] = f"failed: {e.__class__.__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                log.exception(f"{name} failed")
            finally:
                plt.close("all")
    skipped.update(inputs.notes)  # runs an overlay was drawn without (no metrics.csv): listed like skipped plots
    return written, skipped


def summarize(analysis_dir: Path | str = "analysis_runs", formula: str | None = None, report: bool = True,
              skip_unchanged: bool = False, color_by: str | None = None) -> dict[str, Any]:
    """Draw every summary plot into <analysis_dir>/plots/ and (by default) write index.html.

    A --formula the user gave is checked (check_formula) and fitted before anything is written: an unusable
    one is a PicoError, whereas the default formula is skipped where the data cannot support it.
    skip_unchanged: draw nothing when the plots were made from this very runs.csv and formula
    (a re-run of the pipeline with nothing new). color_by: the column that colours the learning-curve
    overlays (checked first, like the formula; default: per family, the setting that varies most).
    Returns {"written": [paths], "skipped": {plot: reason}, "fits": {group: OLSFit}, "report": path or None,
    "unchanged": bool}.
    """
    analysis_dir = Path(analysis_dir)
    strict = bool(formula)  # the user's own formula must fit; the default is fitted as far as the data allow
    if strict:
        check_formula(formula)
    check_color_by(color_by)
    formula = formula or DEFAULT_FORMULA
    df = load_summary(analysis_dir)
    out = analysis_dir / "plots"
    stamp = hashlib.sha256((analysis_dir / TABLE_NAME).read_bytes() + formula.encode()
                           + (color_by or "").encode()).hexdigest()
    if skip_unchanged and (out / STAMP).exists() and (out / STAMP).read_text() == stamp:
        log.info(f"plots in {out} are up to date with runs.csv; nothing to draw")
        written = sorted(p for p in out.iterdir() if p.name != STAMP)
        skipped = dict(line.split(": ", 1) for line in (out / "skipped.txt").read_text().splitlines() if ": " in line)
        path = write_report(analysis_dir) if report else None
        return {"written": written, "skipped": skipped, "fits": {}, "report": path, "unchanged": True}
    # fitted before anything is written or logged: a user formula that fails on this data leaves no trace
    fits, fit_skips = regressions(df, formula, strict=strict)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.iterdir():  # no stale plot from a previous call survives
        if old.suffix in (".png", ".csv", ".md", ".txt") or old.name == STAMP:
            old.unlink()
    log.info(f"summarising {len(df)} run(s) of {', '.join(families(df))} from {analysis_dir / 'runs.csv'}")
    inputs = PlotInput(df, analysis_dir, fits=fits, fit_skips=fit_skips, color_by=color_by)
    written, skipped = draw_plots(inputs, out)
    for name, reason in skipped.items():
        log.info(f"skipped {name}: {reason}")
    (out / "skipped.txt").write_text("".join(f"{k}: {v}\n" for k, v in skipped.items()))
    log.info(f"wrote {len(written)} file(s) to {out}, skipped {len(skipped)}")
    (out / STAMP).write_text(stamp)  # last: a crash above leaves no stamp, so the next call redraws
    path = write_report(analysis_dir) if report else None
    return {"written": written, "skipped": skipped, "fits": fits, "report": path, "unchanged": False}
