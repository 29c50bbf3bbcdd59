"""All runs at once: Pareto frontiers, regressions and plots from analysis_runs/runs.csv.

    summarize("analysis_runs")  ->  analysis_runs/plots/*.png, *.csv, *.md, regression_summary.txt, skipped.txt

The sweep-tool comparisons (learning-curve overlays, hyperparameter importance, parallel coordinates) are
drawn by picollm.study.compare.

Every plot is drawn independently: one that the data cannot support (a single run, a single family, a
column that is all NaN) is skipped with a one-line reason, logged and listed in plots/skipped.txt, and the
others are still drawn. Headless (Agg backend).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import difflib
import hashlib
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: never open a window, never need a display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from picollm.core.errors import PicoError  # noqa: E402
from picollm.core.log import get_logger  # noqa: E402
from picollm.runs.table import DB_NAME, TABLE_COLUMNS, TABLE_NAME, TEXT_COLUMNS, export_table, read_table  # noqa: E402
from picollm.study.report import write_report  # noqa: E402

log = get_logger()

DEFAULT_FORMULA = "val_loss ~ np.log(params) + np.log(learning_rate) + C(activation)"
FAMILY_ORDER = ["kgram_mlp", "lstm", "xlstm", "transformer"]
#: the two hyperparameters a family's heatmap is drawn over: only settings that family really has
FAMILY_AXES = {"kgram_mlp": ("embed", "k"), "lstm": ("embed", "hidden"), "xlstm": ("embed", "hidden"),
               "transformer": ("embed", "layers")}
#: axis labels with units
LABELS = {"val_loss": "validation loss (nats/token)", "token_accuracy": "validation token accuracy (fraction)",
          "params": "parameters (count)", "train_seconds": "training time (s)", "test_ppl": "test perplexity",
          "embed": "embedding size", "hidden": "hidden size", "k": "context tokens k", "layers": "layers",
          "lr": "learning rate", "learning_rate": "learning rate", "batch_size": "batch size (sequences)",
          "block_size": "context length (tokens)", "dropout": "dropout (probability)", "heads": "heads"}
HYPERPARAMETERS = ["embed", "hidden", "layers", "heads", "k", "inner_layers", "dropout", "block_size",
                   "batch_size", "learning_rate", "weight_decay", "max_steps", "epochs"]
METRICS = ["params", "steps", "train_seconds", "tokens_per_sec", "initial_val_loss", "final_train_loss",
           "final_val_loss", "val_loss", "val_ppl", "token_accuracy", "test_loss", "test_ppl", "test_acc"]
TOP_COLUMNS = ["run", "model", "params", "embed", "hidden", "layers", "heads", "k", "learning_rate",
               "val_loss", "val_ppl", "token_accuracy", "test_ppl", "train_seconds", "status"]
#: columns a --formula error suggests (the header of runs.csv lists them all)
FORMULA_EXAMPLES = ["val_loss", "token_accuracy", "params", "learning_rate", "embed", "hidden", "layers", "k",
                    "activation", "model"]
#: (x column, minimise x?) of the three frontiers against val loss (always minimised)
PARETO_PAIRS = [("token_accuracy", False), ("params", True), ("train_seconds", True)]
#: columns the summary cannot do without: every plot is of val_loss, per run and family; the rest are optional
REQUIRED_COLUMNS = ("run", "model", "val_loss")
STAMP = ".summary_stamp"  # sha256 of the runs.csv + formula the plots were drawn from
STYLE = {"font.size": 11, "axes.titlesize": 13, "axes.labelsize": 11, "legend.fontsize": 9,
         "figure.dpi": 100, "savefig.bbox": "tight"}


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


class Skip(Exception):
    """A plot or fit the data cannot support; the message is the one-line reason."""


# --------------------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------------------
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
    from picollm.study.compare import check_color_by

    if formula:
        check_formula(formula)
    check_color_by(color_by)
    path = Path(analysis_dir) / TABLE_NAME
    if path.exists():
        read_table(path, required=REQUIRED_COLUMNS)


def families(df: pd.DataFrame) -> list[str]:
    """Families present, in the canonical order (unknown ones last)."""
    present = [str(m) for m in df["model"].dropna().unique()]
    return [f for f in FAMILY_ORDER if f in present] + sorted(set(present) - set(FAMILY_ORDER))


def family_colors(df: pd.DataFrame) -> dict[str, Any]:
    """One fixed colour per family, the same in every plot."""
    palette = plt.get_cmap("tab10").colors
    names = FAMILY_ORDER + [f for f in families(df) if f not in FAMILY_ORDER]
    return {name: palette[i % len(palette)] for i, name in enumerate(names)}


def _numeric(df: pd.DataFrame, column: str) -> pd.Series:
    if column not in df.columns:
        return pd.Series(np.nan, index=df.index)
    return pd.to_numeric(df[column], errors="coerce")


# --------------------------------------------------------------------------------------------------
# Pareto frontier
# --------------------------------------------------------------------------------------------------
def pareto_mask(x: Any, y: Any, minimize_x: bool = True, minimize_y: bool = True) -> np.ndarray:
    """Boolean mask of the non-dominated points; NaN / inf points are never on the frontier.

    j dominates i when it is no worse in both objectives and strictly better in one, so exact ties are
    all kept. O(n log n): sort by (x, y); a point survives when it has the smallest y of its x-group and
    that y is strictly below every y seen at strictly smaller x.
    """
    x = np.asarray(x, dtype=float) * (1 if minimize_x else -1)
    y = np.asarray(y, dtype=float) * (1 if minimize_y else -1)
    mask = np.zeros(len(x), dtype=bool)
    idx = np.flatnonzero(np.isfinite(x) & np.isfinite(y))
    if len(idx) == 0:
        return mask
    order = idx[np.lexsort((y[idx], x[idx]))]  # by x, then y
    xs, ys = x[order], y[order]
    new_group = np.r_[True, xs[1:] != xs[:-1]]
    group = np.cumsum(new_group) - 1  # group id of each sorted point
    group_min = ys[new_group]  # y is sorted within a group, so its first y is its minimum
    best_before = np.r_[np.inf, np.minimum.accumulate(group_min)[:-1]]  # min y at strictly smaller x
    mask[order] = (ys == group_min[group]) & (group_min[group] < best_before[group])
    return mask


def pareto_frontier(df: pd.DataFrame, x: str, y: str = "val_loss", minimize_x: bool = True,
                    minimize_y: bool = True) -> pd.DataFrame:
    """The frontier rows of df, sorted by x."""
    mask = pareto_mask(_numeric(df, x), _numeric(df, y), minimize_x, minimize_y)
    return df[mask].sort_values(x)


def plot_pareto(df: pd.DataFrame, x: str, minimize_x: bool, out: Path) -> list[Path]:
    y = "val_loss"
    xs, ys = _numeric(df, x), _numeric(df, y)
    ok = xs.notna() & ys.notna()
    if not ok.any():
        raise Skip(f"no run has both {x} and {y}")
    front = pareto_frontier(df[ok], x, y, minimize_x=minimize_x)
    colors = family_colors(df)
    fig, ax = plt.subplots(figsize=(8, 5.5))
    for fam in families(df[ok]):
        sel = ok & (df["model"] == fam)
        ax.scatter(xs[sel], ys[sel], s=36, alpha=0.75, color=colors[fam], label=fam)
    fx, fy = _numeric(front, x), _numeric(front, y)
    ax.plot(fx, fy, "--", color="black", lw=1.2, alpha=0.7, label="Pareto frontier")
    ax.scatter(fx, fy, s=90, facecolors="none", edgecolors="black", lw=1.4)
    for _, row in front.iterrows():
        ax.annotate(str(row["run"]), (row[x], row[y]), textcoords="offset points", xytext=(5, 5), fontsize=8)
    if x in ("params", "train_seconds") and (xs[ok] > 0).all():
        ax.set_xscale("log")
    better = "lower" if minimize_x else "higher"
    ax.set(xlabel=LABELS.get(x, x) + (" [log scale]" if ax.get_xscale() == "log" else ""), ylabel=LABELS[y],
           title=f"Pareto frontier: {y} (lower is better) vs {x} ({better} is better)")
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    png = out / f"pareto_{y}_vs_{x}.png"
    _save(fig, png)
    csv = out / f"pareto_{y}_vs_{x}.csv"
    cols = [c for c in ["run", "model", x, y, "params", "token_accuracy", "train_seconds", "embed", "hidden",
                        "layers", "heads", "k", "learning_rate"] if c in front.columns]
    front[list(dict.fromkeys(cols))].to_csv(csv, index=False)
    return [png, csv]


# --------------------------------------------------------------------------------------------------
# KDE jointplot
# --------------------------------------------------------------------------------------------------
def _kde_ok(x: pd.Series, y: pd.Series) -> bool:
    """A 2-D KDE needs >= 3 points and a non-singular covariance (KDE raises otherwise)."""
    if len(x) < 3 or x.std() == 0 or y.std() == 0:
        return False
    cov = np.cov(np.vstack([x, y]))
    return bool(np.isfinite(cov).all() and np.linalg.det(cov) > 1e-12 * cov[0, 0] * cov[1, 1])


def plot_joint(df: pd.DataFrame, out: Path) -> list[Path]:
    import seaborn as sns

    x, y = "val_loss", "token_accuracy"
    d = df.assign(**{x: _numeric(df, x), y: _numeric(df, y)}).dropna(subset=[x, y])
    if d.empty:
        raise Skip(f"no run has both {x} and {y}")
    colors = family_colors(df)
    g = sns.JointGrid(height=6.5)
    fallback = []
    for fam in families(d):
        part = d[d["model"] == fam]
        if _kde_ok(part[x], part[y]):
            try:
                sns.kdeplot(x=part[x], y=part[y], ax=g.ax_joint, color=colors[fam], levels=5, alpha=0.6, gridsize=60,
                            warn_singular=False)
                sns.kdeplot(x=part[x], ax=g.ax_marg_x, color=colors[fam], fill=True, alpha=0.3, warn_singular=False)
                sns.kdeplot(y=part[y], ax=g.ax_marg_y, color=colors[fam], fill=True, alpha=0.3, warn_singular=False)
            except (np.linalg.LinAlgError, ValueError):
                fallback.append(fam)
        else:
            fallback.append(fam)
        if fam in fallback:  # too few points or no spread for a density: show them as a rug instead
            sns.rugplot(x=part[x], ax=g.ax_marg_x, color=colors[fam], height=0.5)
            sns.rugplot(y=part[y], ax=g.ax_marg_y, color=colors[fam], height=0.5)
        g.ax_joint.scatter(part[x], part[y], s=22, color=colors[fam], label=fam + (" (scatter)" if fam in fallback else ""))
    g.ax_joint.set(xlabel=LABELS[x], ylabel=LABELS[y])
    g.ax_joint.legend(loc="best")
    g.figure.suptitle("Token accuracy vs validation loss by family (KDE)", y=1.02)
    if fallback:
        log.info(f"jointplot: scatter instead of KDE for {', '.join(fallback)} (< 3 runs or no spread)")
    png = out / "joint_kde_token_accuracy_vs_val_loss.png"
    _save(g.figure, png)
    return [png]


# --------------------------------------------------------------------------------------------------
# OLS regressions
# --------------------------------------------------------------------------------------------------
@dataclass
class OLSFit:
    """One fitted regression: the formula actually fitted, the rows it used, and what was dropped."""

    group: str
    formula: str
    result: Any  # statsmodels RegressionResultsWrapper
    data: pd.DataFrame
    dropped: list[str] = field(default_factory=list)


def split_formula(formula: str) -> tuple[str, list[str]]:
    """'y ~ a + np.log(b) + C(c)' -> ('y', ['a', 'np.log(b)', 'C(c)']), splitting only at top-level '+'."""
    if formula.count("~") != 1:
        raise PicoError(f"--formula {formula!r} must have exactly one '~' (e.g. {DEFAULT_FORMULA!r})")
    lhs, rhs = (s.strip() for s in formula.split("~"))
    terms, depth, start = [], 0, 0
    for i, ch in enumerate(rhs):
        depth += ch == "("
        depth -= ch == ")"
        if ch == "+" and depth == 0:
            terms.append(rhs[start:i].strip())
            start = i + 1
    terms.append(rhs[start:].strip())
    return lhs, [t for t in terms if t and t != "1"]


def _formula_names(code: str) -> list[str]:
    """The variables a patsy factor reads: its bare names, less the functions it calls and the modules it dots into."""
    tree = ast.parse(code, mode="eval")
    not_data = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            not_data.add(id(node.func))
        if isinstance(node, ast.Attribute):
            root = node.value
            while isinstance(root, ast.Attribute):
                root = root.value
            not_data.add(id(root))
    return [n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and id(n) not in not_data]


def _stand_in_table(rows: int = 6) -> pd.DataFrame:
    """A few rows of runs.csv's types: numbers, and the real levels of the text settings and families."""
    from picollm.config import RunConfig
    from picollm.models import FAMILIES

    levels = {f.name: f.metadata.get("choices") for f in dataclasses.fields(RunConfig)} | {"model": tuple(FAMILIES)}
    columns = {}
    for c in TABLE_COLUMNS:
        if c in TEXT_COLUMNS:
            values = levels.get(c) or (f"{c}_a", f"{c}_b")
            columns[c] = [values[i % len(values)] for i in range(rows)]
        else:
            columns[c] = np.arange(1.0, rows + 1)
    return pd.DataFrame(columns)


def check_formula(formula: str) -> None:
    """Reject a --formula that no runs.csv could fit, before any table is read or any run trains.

    Checks patsy's syntax (statsmodels fits through patsy), a response left of '~', that every variable is a
    column of runs.csv, and that the formula evaluates on a stand-in table of the columns' types,
    which catches an unknown function and arithmetic on a text column. Raises a one-line PicoError.
    """
    import statsmodels.formula.api as smf
    from patsy import ModelDesc, PatsyError


    lhs, _ = split_formula(formula)
    if not lhs:
        raise PicoError(f"--formula {formula!r} has no response left of '~' (e.g. {DEFAULT_FORMULA!r})")
    try:
        desc = ModelDesc.from_formula(formula)
        response = [name for term in desc.lhs_termlist for f in term.factors for name in _formula_names(f.code)]
        names = response + [name for term in desc.rhs_termlist for f in term.factors for name in _formula_names(f.code)]
    except (PatsyError, SyntaxError) as e:
        raise PicoError(f"--formula {formula!r} is not a formula ({str(e).splitlines()[0]}); write it like "
                        f"{DEFAULT_FORMULA!r}") from None
    unknown = [name for name in dict.fromkeys(names) if name not in TABLE_COLUMNS]
    if unknown:
        close = difflib.get_close_matches(unknown[0], TABLE_COLUMNS, n=3)
        hint = f"did you mean {' or '.join(close)}? " if close else ""
        raise PicoError(f"--formula {formula!r} names unknown column {', '.join(unknown)}; {hint}columns include "
                        f"{', '.join(FORMULA_EXAMPLES)} (the header of runs.csv lists them all)")
    text = [name for name in response if name in TEXT_COLUMNS]
    if text:
        raise PicoError(f"--formula {formula!r} has text column {text[0]} as its response; OLS needs a number "
                        "such as val_loss, token_accuracy or test_ppl left of '~'")
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            smf.ols(formula, _stand_in_table())
    except Exception as e:  # patsy wraps the evaluation error; a missing level or NaN depends on the real data
        cause = e.__cause__ or e
        if isinstance(cause, (NameError, AttributeError)):
            fix = "call numpy as np.log(...), or patsy's C(), I(), Q(), center(), standardize()"
        elif isinstance(cause, TypeError):
            fix = "use text columns such as model or activation only inside C(...)"
        else:
            return
        raise PicoError(f"--formula {formula!r} cannot be evaluated ({cause.__class__.__name__}: "
                        f"{str(cause).splitlines()[0]}); {fix}") from None


def _columns_in(expr: str, df: pd.DataFrame) -> list[str]:
    return [name for name in dict.fromkeys(re.findall(r"[A-Za-z_]\w*", expr)) if name in df.columns]


def _is_factor(term: str, column: str, df: pd.DataFrame) -> bool:
    return "C(" in term or not pd.api.types.is_numeric_dtype(df[column])


def fit_ols(df: pd.DataFrame, formula: str, group: str = "pooled", strict: bool = False) -> OLSFit:
    """OLS of `formula` on df, dropping (with a reason) every term the data cannot support.

    A term is dropped when a column it uses is undefined for a whole family in df (e.g. activation outside
    kgram_mlp), when a factor has one level or a numeric column is constant over the usable rows, when it
    cannot be evaluated, and, last terms first, while there are no more rows than parameters.
    Raises Skip when no term is left or there are fewer than 2 usable rows. strict (the user's own formula):
    a response that names no column, or a term that cannot be evaluated on this data, raises PicoError.
    """
    import statsmodels.formula.api as smf

    lhs, terms = split_formula(formula)
    lhs_cols = _columns_in(lhs, df)
    if not lhs_cols:
        if strict:
            raise PicoError(f"--formula response {lhs!r} names no column of runs.csv")
        raise Skip(f"response {lhs!r} names no column of runs.csv")
    dropped: list[str] = []

    def drop(term: str, reason: str) -> None:
        terms.remove(term)
        dropped.append(f"{term}: {reason}")

    for term in list(terms):
        cols = _columns_in(term, df)
        if not cols:  # a constant such as 0 (no intercept), or a name check_formula rejects
            drop(term, "names no column of runs.csv")
            continue
        lacking = [f for f in families(df) for c in cols if df.loc[df["model"] == f, c].isna().all()]
        if lacking:
            drop(term, f"{', '.join(cols)} undefined for {', '.join(sorted(set(lacking)))}")
    while True:  # rows usable for the remaining terms; dropping a term may bring rows back, so iterate
        used = list(dict.fromkeys(lhs_cols + [c for t in terms for c in _columns_in(t, df)]))
        data = df.dropna(subset=used)
        bad = next(((t, c) for t in terms for c in _columns_in(t, data) if data[c].nunique() < 2), None)
        if bad is None:
            break
        term, col = bad
        drop(term, f"{col} has one level" if _is_factor(term, col, data) else f"{col} is constant")
    if len(data) < 2:  # patsy fails on an empty frame: that is thin data, not a bad term
        raise Skip(f"{len(data)} usable run(s); a regression needs at least 2")
    for term in list(terms):  # a term patsy cannot evaluate (np.log of text, unknown function)
        try:
            smf.ols(f"{lhs} ~ {term}", data)
        except Exception as e:
            reason = f"{e.__class__.__name__}: {str(e).splitlines()[0][:80]}"
            if strict:
                raise PicoError(f"--formula term {term!r} cannot be evaluated on the {group} runs ({reason}); "
                                "change or drop that term") from None
            drop(term, f"cannot evaluate ({reason})")
    while True:
        fitted = f"{lhs} ~ {' + '.join(terms) or '1'}"
        if len(data) < 2:
            raise Skip(f"{len(data)} usable run(s); a regression needs at least 2")
        model = smf.ols(fitted, data)
        finite = np.isfinite(model.exog).all(axis=1) & np.isfinite(model.endog)
        if not finite.all():  # log of a non-positive value: drop those rows, they carry no information
            data = data.loc[np.asarray(model.data.row_labels)[finite]]
            continue
        n, p = model.exog.shape
        if n > p:
            break
        if not terms:
            raise Skip(f"{n} usable run(s) cannot support an intercept-only fit")
        drop(terms[-1], f"{n} rows for {p} parameters")
    if not terms:  # an intercept-only "regression" explains nothing; say why instead of plotting it
        raise Skip(f"no term left to fit ({'; '.join(dropped)})")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = model.fit()
    return OLSFit(group=group, formula=fitted, result=result, data=data, dropped=dropped)


def regressions(df: pd.DataFrame, formula: str, strict: bool = False
                ) -> tuple[dict[str, OLSFit], dict[str, str]]:
    """Per-family fits and a pooled fit with family as a factor; returns (fits, skipped reasons).

    A group the data cannot support is skipped. A fit that fails outright is skipped too, unless strict (the
    user's own formula), where it is a PicoError: a formula the user asked for is never silently left out.
    """
    fits, skipped = {}, {}
    pooled = formula if "C(model)" in formula.replace(" ", "") else f"{formula} + C(model)"
    groups = [("pooled", df, pooled)] + [(f, df[df["model"] == f], formula) for f in families(df)]
    for name, part, form in groups:
        try:
            fits[name] = fit_ols(part, form, group=name, strict=strict)
        except Skip as e:
            skipped[f"regression[{name}]"] = str(e)
        except PicoError:
            raise
        except Exception as e:  # statsmodels failing on this data
            reason = f"{e.__class__.__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            if strict:
                raise PicoError(f"--formula {formula!r} cannot be fitted to the {name} runs ({reason}); change "
                                "the formula") from None
            skipped[f"regression[{name}]"] = f"failed: {reason}"
    return fits, skipped


def _summary_text(fit: OLSFit) -> str:
    header = [f"=== {fit.group}: {fit.formula}  (n = {len(fit.data)})"]
    header += [f"dropped {d}" for d in fit.dropped] or ["dropped nothing"]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # small-sample normality-test warnings
            body = str(fit.result.summary())
    except Exception:  # the omnibus test needs >= 8 rows on some versions; the table is what matters
        r = fit.result
        table = pd.concat([r.params.rename("coef"), r.bse.rename("std err"), r.conf_int()], axis=1)
        body = f"R-squared {r.rsquared:.4f}\n{table.to_string()}"
    return "\n".join(header) + "\n" + body + "\n"


def plot_regressions(fits: dict[str, OLSFit], out: Path) -> list[Path]:
    if not fits:
        raise Skip("no group has enough runs for a regression")
    written = [out / "regression_summary.txt"]
    written[0].write_text("\n\n".join(_summary_text(f) for f in fits.values()))

    from statsmodels.graphics.gofplots import qqplot

    fig, axes = plt.subplots(len(fits), 2, figsize=(10, 3.6 * len(fits)), squeeze=False)
    for (name, fit), (ax_res, ax_qq) in zip(fits.items(), axes):
        r = fit.result
        ax_res.scatter(r.fittedvalues, r.resid, s=20, alpha=0.8)
        ax_res.axhline(0, color="black", lw=1)
        ax_res.set(xlabel="fitted value (nats/token)", ylabel="residual (nats/token)",
                   title=f"{name}: residuals vs fitted (n={len(fit.data)})")
        qqplot(np.asarray(r.resid), line="s", ax=ax_qq, markersize=4)  # "s": the normal scaled by their std
        ax_qq.set(xlabel="normal quantile (standard deviations)", ylabel="residual quantile (nats/token)",
                  title=f"{name}: Q-Q plot of residuals")
    fig.tight_layout()
    written.append(out / "regression_diagnostics.png")
    _save(fig, written[-1])

    coef = {name: fit for name, fit in fits.items() if len(fit.result.params) > 1}
    if coef:
        sizes = [len(f.result.params) for f in coef.values()]  # panel height follows its coefficient count
        fig, axes = plt.subplots(len(coef), 1, figsize=(8, 0.4 * sum(sizes) + 1.1 * len(coef)), squeeze=False,
                                 gridspec_kw={"height_ratios": sizes})
        for (name, fit), ax in zip(coef.items(), axes[:, 0]):
            params = fit.result.params.drop("Intercept", errors="ignore")
            ci = fit.result.conf_int().loc[params.index]
            pos = np.arange(len(params))
            ax.errorbar(params.values, pos, xerr=[params - ci[0], ci[1] - params], fmt="o", capsize=4)
            ax.axvline(0, color="grey", lw=1, ls="--")
            ax.set_yticks(pos, params.index)
            ax.set(xlabel="coefficient on val loss (nats/token per unit), 95% CI", title=f"{name}: OLS coefficients")
        fig.tight_layout()
        written.append(out / "regression_coefficients.png")
        _save(fig, written[-1])
    return written


# --------------------------------------------------------------------------------------------------
# boxplots, heatmaps, correlations, top-10
# --------------------------------------------------------------------------------------------------
def plot_box(df: pd.DataFrame, by: str, out: Path) -> list[Path]:
    import seaborn as sns

    if by not in df.columns:
        raise Skip(f"runs.csv has no {by} column")
    d = df.assign(val_loss=_numeric(df, "val_loss")).dropna(subset=["val_loss", by])
    if d.empty:
        raise Skip(f"no run has both {by} and val_loss")
    d = d.assign(**{by: d[by].astype(str)})
    order = [f for f in families(d)] if by == "model" else sorted(d[by].unique())
    fig, ax = plt.subplots(figsize=(max(5.0, 1.6 * len(order) + 2), 5))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # seaborn 0.13 passes matplotlib's deprecated vert=
        sns.boxplot(data=d, x=by, y="val_loss", order=order, ax=ax, color="lightsteelblue", showfliers=False)
    sns.stripplot(data=d, x=by, y="val_loss", order=order, ax=ax, color="black", size=4, alpha=0.7)
    counts = d[by].value_counts()
    ax.set_xticks(range(len(order)), [f"{o}\n(n={counts[o]})" for o in order])
    what = "family" if by == "model" else by
    ax.set(xlabel=what, ylabel=LABELS["val_loss"], title=f"Validation loss by {what}")
    ax.grid(axis="y", alpha=0.3)
    png = out / f"box_val_loss_by_{what}.png"
    _save(fig, png)
    return [png]


def heatmap_table(df: pd.DataFrame, family: str) -> pd.DataFrame:
    """Mean val loss of `family` over its own two hyperparameters (rows, columns named after them)."""
    row, col = FAMILY_AXES[family]
    d = df.assign(val_loss=_numeric(df, "val_loss"))
    d = d[d["model"] == family]
    if d.empty:
        raise Skip(f"no {family} runs")
    for axis in (row, col):
        if axis not in d.columns or d[axis].isna().all():
            raise Skip(f"{axis} is missing for every {family} run")
    d = d.dropna(subset=[row, col, "val_loss"])
    if d.empty:
        raise Skip(f"no {family} run has {row}, {col} and val_loss")
    return d.pivot_table(index=row, columns=col, values="val_loss", aggfunc="mean")


def plot_heatmap(df: pd.DataFrame, family: str, out: Path) -> list[Path]:
    import seaborn as sns

    table = heatmap_table(df, family)
    table.index = [_fmt_level(v) for v in table.index]
    table.columns = [_fmt_level(v) for v in table.columns]
    row, col = FAMILY_AXES[family]
    fig, ax = plt.subplots(figsize=(1.2 * len(table.columns) + 3.5, 0.8 * len(table.index) + 2.5))
    sns.heatmap(table, annot=True, fmt=".3f", cmap="viridis_r", ax=ax,
                cbar_kws={"label": "mean " + LABELS["val_loss"]})
    ax.set(xlabel=LABELS.get(col, col), ylabel=LABELS.get(row, row),
           title=f"{family}: mean validation loss over {row} x {col}")
    png = out / f"heatmap_{family}_{row}_x_{col}.png"
    _save(fig, png)
    return [png]


def _fmt_level(v: Any) -> str:
    return str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)


def plot_correlation(df: pd.DataFrame, out: Path) -> list[Path]:
    import seaborn as sns

    cols = [c for c in dict.fromkeys(METRICS + HYPERPARAMETERS) if c in df.columns]
    num = pd.DataFrame({c: _numeric(df, c) for c in cols})
    num = num.loc[:, num.nunique() > 1]  # a constant column has no correlation
    if num.shape[1] < 2:
        raise Skip(f"fewer than 2 numeric columns vary across {len(df)} run(s)")
    corr = num.corr()  # pairwise-complete: NaNs of other families don't remove rows
    fig, ax = plt.subplots(figsize=(0.55 * len(corr) + 3, 0.5 * len(corr) + 2.5))
    sns.heatmap(corr, annot=len(corr) <= 16, fmt=".2f", cmap="coolwarm", vmin=-1, vmax=1, ax=ax,
                cbar_kws={"label": "Pearson correlation (unitless)"})
    ax.set(title="Correlation of metrics and hyperparameters (pairwise over runs)")
    png, csv = out / "correlation_matrix.png", out / "correlation_matrix.csv"
    _save(fig, png)
    corr.to_csv(csv)
    return [png, csv]


def top_runs(df: pd.DataFrame, n: int = 10) -> pd.DataFrame:
    """The n runs with the lowest val loss, key columns only."""
    d = df.assign(val_loss=_numeric(df, "val_loss")).dropna(subset=["val_loss"]).sort_values("val_loss")
    return d[[c for c in TOP_COLUMNS if c in d.columns]].head(n).reset_index(drop=True)


def markdown_table(df: pd.DataFrame, floatfmt: str = ".4g") -> str:
    """A GitHub Markdown table, one unpadded line per row (so tables diff line by line); written here rather
    than with pandas' to_markdown, which needs the optional tabulate package and pads every cell."""
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return "" if np.isnan(v) else format(v, floatfmt)
        if isinstance(v, int | np.integer) and not isinstance(v, bool):
            return f"{v:,}"
        return str(v).replace("|", "\\|")

    lines = ["| " + " | ".join(df.columns) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def write_top(df: pd.DataFrame, out: Path) -> list[Path]:
    top = top_runs(df)
    if top.empty:
        raise Skip("no run has a val_loss")
    csv, md = out / "top10.csv", out / "top10.md"
    top.to_csv(csv, index=False)
    md.write_text(f"# Top {len(top)} runs by validation loss\n\n" + markdown_table(top))
    return [csv, md]


# --------------------------------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------------------------------
def _save(fig: plt.Figure, path: Path) -> None:
    fig.savefig(path)
    plt.close(fig)


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
    from picollm.study.compare import check_color_by, draw_comparisons

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
        path = _report(analysis_dir) if report else None
        return {"written": written, "skipped": skipped, "fits": {}, "report": path, "unchanged": True}
    # fitted before anything is written or logged: a user formula that fails on this data leaves no trace
    fits, fit_skips = regressions(df, formula, strict=strict)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.iterdir():  # no stale plot from a previous call survives
        if old.suffix in (".png", ".csv", ".md", ".txt") or old.name == STAMP:
            old.unlink()
    written: list[Path] = []
    skipped: dict[str, str] = {}

    def attempt(name: str, draw: Callable[[], list[Path]]) -> None:
        try:
            with plt.rc_context(STYLE):
                written.extend(draw())
        except Skip as e:
            skipped[name] = str(e)
        except Exception as e:  # a plotting bug must not cost the other plots; say what happened
            skipped[name] = f"failed: {e.__class__.__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            log.exception(f"{name} failed")
        finally:
            plt.close("all")

    log.info(f"summarising {len(df)} run(s) of {', '.join(families(df))} from {analysis_dir / 'runs.csv'}")
    for x, minimize_x in PARETO_PAIRS:
        attempt(f"pareto_val_loss_vs_{x}", lambda x=x, m=minimize_x: plot_pareto(df, x, m, out))
    attempt("joint_kde", lambda: plot_joint(df, out))
    for fit in fits.values():
        for reason in fit.dropped:
            log.info(f"regression[{fit.group}]: dropped {reason}")
    skipped.update(fit_skips)
    attempt("regressions", lambda: plot_regressions(fits, out))
    attempt("box_by_activation", lambda: plot_box(df, "activation", out))
    attempt("box_by_family", lambda: plot_box(df, "model", out))
    for fam in FAMILY_AXES:
        attempt(f"heatmap_{fam}", lambda fam=fam: plot_heatmap(df, fam, out))
    attempt("correlation", lambda: plot_correlation(df, out))
    attempt("top10", lambda: write_top(df, out))
    left_out: dict[str, str] = {}  # runs an overlay was drawn without (no metrics.csv): listed like skipped plots
    draw_comparisons(df, analysis_dir, out, color_by, attempt, left_out)
    skipped.update(left_out)

    for name, reason in skipped.items():
        log.info(f"skipped {name}: {reason}")
    (out / "skipped.txt").write_text("".join(f"{k}: {v}\n" for k, v in skipped.items()))
    log.info(f"wrote {len(written)} file(s) to {out}, skipped {len(skipped)}")
    (out / STAMP).write_text(stamp)  # last: a crash above leaves no stamp, so the next call redraws
    path = _report(analysis_dir) if report else None
    return {"written": written, "skipped": skipped, "fits": fits, "report": path, "unchanged": False}


def _report(analysis_dir: Path) -> Path:
    return write_report(analysis_dir)
