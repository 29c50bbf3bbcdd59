"""importance_<family>.png / .csv: the permutation importance of each setting that varies across a family's
runs, in a random-forest fit of validation loss (mean and std over repeated shuffles)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from picollm.study.common import Skip, numeric
from picollm.study.plots.base import Plot, PlotInput, save_figure
from picollm.study.varying import fmt_value, is_categorical, levels, varying_settings

MIN_IMPORTANCE_RUNS = 5  # below this a forest has nothing to split on and every importance is noise
N_REPEATS = 10  # shuffles per setting in the permutation importance
SEED = 0
RELIABLE_R2 = 0.5  # below this out-of-bag R^2 the forest explains too little for its ranking to mean much


def encode_settings(runs: pd.DataFrame, settings: list[str]) -> pd.DataFrame:
    """One numeric column per setting. Numbers stay numbers; levels (and a number column with empty cells)
    become ordinal codes, so that a setting stays one column and its permutation importance is its own
    rather than split across one-hot columns (a forest splits ordinal codes just as well)."""
    encoded = {}
    for name in settings:
        values = runs[name]
        if is_categorical(values, name) or values.isna().any():
            codes = {fmt_value(level): float(j) for j, level in enumerate(levels(values))}
            encoded[name] = values.map(lambda v, codes=codes: codes[fmt_value(v)])
        else:
            encoded[name] = pd.to_numeric(values).astype(float)
    return pd.DataFrame(encoded, index=runs.index)


def linked_settings(X: pd.DataFrame) -> list[list[str]]:
    """The columns of X grouped by the runs they tell apart: two settings that always change together (a
    preset's size configs: embed 32 with hidden 128, embed 64 with hidden 256) split the runs the same way,
    and no fit can say which of them mattered."""
    groups: list[list[str]] = []
    for name in X.columns:
        for group in groups:
            pairs = X[[group[0], name]].drop_duplicates()
            if pairs[group[0]].is_unique and pairs[name].is_unique:  # each value determines the other
                group.append(name)
                break
        else:
            groups.append([name])
    return groups


def importance_table(df: pd.DataFrame, family: str, n_repeats: int = N_REPEATS,
                     seed: int = SEED) -> tuple[pd.DataFrame, float]:
    """Permutation importance of each varying setting of `family` for val loss: a frame (setting, mean, std)
    sorted by mean, and the forest's out-of-bag R^2 (NaN when too few runs are out of bag). Settings that
    always changed together are one row, named "a & b": shuffled apart, they would share out one effect
    between them at random."""
    from sklearn.ensemble import RandomForestRegressor  # heavy: loaded only where importance is computed
    from sklearn.inspection import permutation_importance

    runs = df[df["model"] == family].assign(val_loss=lambda d: numeric(d, "val_loss")).dropna(subset=["val_loss"])
    if len(runs) < MIN_IMPORTANCE_RUNS:
        raise Skip(f"{len(runs)} {family} run(s) with a val_loss; importance needs at least {MIN_IMPORTANCE_RUNS}")
    settings = varying_settings(runs, family)
    if not settings:
        raise Skip(f"no setting varies across the {len(runs)} {family} runs")
    if runs["val_loss"].nunique() < 2:
        raise Skip(f"val_loss is the same for all {len(runs)} {family} runs")
    encoded, y = encode_settings(runs, settings), runs["val_loss"].to_numpy()
    groups = linked_settings(encoded)
    X = encoded[[group[0] for group in groups]]
    forest = RandomForestRegressor(n_estimators=200, random_state=seed, oob_score=True, n_jobs=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # few runs: "some inputs do not have OOB scores"
        forest.fit(X, y)
    # scored on the runs the forest was fitted to: a held-out split of a few dozen runs would leave too few
    # to score; the out-of-bag R^2 (in the title) says whether the fit, and so the ranking, means anything
    result = permutation_importance(forest, X, y, n_repeats=n_repeats, random_state=seed, n_jobs=1)
    table = pd.DataFrame({"setting": [" & ".join(g) for g in groups], "mean": result.importances_mean,
                          "std": result.importances_std})
    oob = float(forest.oob_score_) if np.isfinite(getattr(forest, "oob_score_", np.nan)) else float("nan")
    return table.sort_values("mean", ascending=False, kind="stable").reset_index(drop=True), oob


@dataclass
class Importance:
    family: str
    table: pd.DataFrame  # setting, mean, std: most important first
    oob: float  # the forest's out-of-bag R^2 (NaN: too few runs out of bag)
    runs: int  # the runs it was fitted to


def importance(inputs: PlotInput, family: str) -> Importance:
    df = inputs.runs
    table, oob = importance_table(df, family)
    return Importance(family, table, oob, int(((df["model"] == family) & numeric(df, "val_loss").notna()).sum()))


def draw(data: Importance, paths: list[Path]) -> list[Path]:
    table, oob, family = data.table, data.oob, data.family
    fig, ax = plt.subplots(figsize=(8, max(3.2, 1.4 + 0.45 * len(table))), layout="constrained")
    pos = np.arange(len(table))[::-1]  # most important at the top
    ax.barh(pos, table["mean"], xerr=table["std"], color="steelblue", capsize=4, ecolor="black")
    ax.set_yticks(pos, table["setting"])
    ax.axvline(0, color="grey", lw=1)
    if not np.isfinite(oob):
        fit = "too few runs for an out-of-bag R\u00b2"
    else:
        fit = f"forest out-of-bag R\u00b2 = {oob:.2f}" + (" (low: read the ranking loosely)" if oob < RELIABLE_R2 else "")
    joined = table["setting"].str.contains(" & ").any()
    ax.set(xlabel="permutation importance: drop in the forest's R\u00b2 on val loss when shuffled (unitless)"
                  + ("\na & b: settings that always changed together in these runs (their effects cannot be told "
                     "apart)" if joined else ""),
           ylabel="setting",
           title=f"{family}: hyperparameter importance for val loss\n{data.runs} runs, random forest, "
                 f"{N_REPEATS} shuffles per setting (bars: mean \u00b1 std); {fit}")
    ax.grid(axis="x", alpha=0.3)
    png, csv = paths
    save_figure(fig, png)
    table.to_csv(csv, index=False)
    return paths


def plot_importance(df: pd.DataFrame, family: str, out: Path) -> list[Path]:
    """importance_<family>.png and .csv in out."""
    return PLOT.render(PlotInput(df, Path(out)), family, Path(out))


PLOT = Plot("importance", "Hyperparameter importance", "importance_", data=importance, draw=draw, per_family=True,
            files=lambda family: [f"importance_{family}.png", f"importance_{family}.csv"])
