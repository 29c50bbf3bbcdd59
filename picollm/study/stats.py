"""The study's statistics, no matplotlib: Pareto frontiers, and OLS fits of a formula per family and pooled,
with the checks that turn an unusable --formula into one error line before anything trains or is written.

statsmodels fits through patsy (a dependency of statsmodels); both are imported where a formula is checked
or fitted, so the plots and the report load without them.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import re
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from picollm.config import RunConfig
from picollm.core.errors import PicoError
from picollm.models import FAMILIES
from picollm.runs.table import TABLE_COLUMNS, TEXT_COLUMNS
from picollm.study.common import Skip, families, numeric

DEFAULT_FORMULA = "val_loss ~ np.log(params) + np.log(learning_rate) + C(activation)"
#: columns a --formula error suggests (the header of runs.csv lists them all)
FORMULA_EXAMPLES = ["val_loss", "token_accuracy", "params", "learning_rate", "embed", "hidden", "layers", "k",
                    "activation", "model"]


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
    mask = pareto_mask(numeric(df, x), numeric(df, y), minimize_x, minimize_y)
    return df[mask].sort_values(x)


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
    import statsmodels.formula.api as smf  # heavy: loaded only where a formula is checked or fitted
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
    import statsmodels.formula.api as smf  # heavy: loaded only where a formula is fitted

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


def summary_text(fit: OLSFit) -> str:
    """A fit as text: the formula fitted, the terms dropped and why, and statsmodels' summary."""
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

