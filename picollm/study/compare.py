"""Compare runs the way sweep tools (W&B, Optuna) show them, drawn into analysis_runs/plots/ by summarize():

    curves_<family>_<corpus>.png     validation loss vs step, tokens seen and training seconds, one line per
                                     run, coloured by one setting (--color_by; default the one that varies most)
    importance_<family>.png / .csv   permutation importance of each varying setting in a random-forest fit of
                                     val loss (mean and std over repeated shuffles)
    parallel_<family>.png            parallel coordinates: one axis per varying setting, then val loss; lines
                                     coloured by val loss

Each plot raises summary.Skip with a one-line reason when the data cannot support it. A family's settings
are the RunConfig settings it uses: the shared ones (data, optimisation) and its own model settings
(picollm.models.family_fields); never where or how a run ran, nor its seed.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import ListedColormap, LogNorm, Normalize
from matplotlib.ticker import LogLocator, MaxNLocator

from picollm.config import MODEL_FIELDS, RUNTIME_FIELDS, RunConfig
from picollm.core.errors import CheckpointError, PicoError
from picollm.runs.table import TABLE_COLUMNS, TEXT_COLUMNS
from picollm.study.summarize import LABELS, Skip, _numeric, _save, families

#: RunConfig settings that say where a run ran, how it was seeded or where it started, not what it trained
NOT_SETTINGS = RUNTIME_FIELDS | {"model", "seed", "parent"}
#: the default --color_by is the setting with the most distinct values; a tie goes to the first of these,
#: then to RunConfig's order (the learning rate is what a sweep most often varies and most often matters)
COLOR_PRIORITY = ("lr", "embed", "hidden", "layers", "heads", "k", "inner_layers", "dropout", "batch_size",
                  "block_size", "weight_decay", "activation")
#: settings searched on log grids: drawn on a log scale whenever they are all positive
LOG_SETTINGS = frozenset({"lr", "muon_lr", "learning_rate", "weight_decay"})
#: runs.csv columns that name a run rather than describe it: never a colour
NOT_COLORS = frozenset({"run", "run_dir", "fingerprint", "status_reason", "analyzed_at"})
#: the three x axes of a learning-curve figure: metrics.csv column, axis label
CURVE_X = [("step", "training step (count)"), ("tokens_seen", "tokens seen (count)"),
           ("elapsed_sec", "training time (s)")]
MIN_IMPORTANCE_RUNS = 5  # below this a forest has nothing to split on and every importance is noise
N_REPEATS = 10  # shuffles per setting in the permutation importance
SEED = 0
RELIABLE_R2 = 0.5  # below this out-of-bag R^2 the forest explains too little for its ranking to mean much
#: viridis without its palest yellows, which vanish against a white background
LINE_CMAP = ListedColormap(plt.get_cmap("viridis")(np.linspace(0.0, 0.85, 256)), name="viridis_lines")
MISSING_LEVEL = "none"  # the level of a setting left empty (e.g. max_steps when a run trained for epochs)


# --------------------------------------------------------------------------------------------------
# settings: which a family has, which vary, how to colour and scale them
# --------------------------------------------------------------------------------------------------
def family_settings(family: str) -> list[str]:
    """The RunConfig settings `family` uses, in RunConfig's order: the shared ones plus its own model settings."""
    from picollm.models import family_fields

    try:
        own = family_fields(family)
    except (PicoError, ImportError):  # a family from a newer table or a missing extra: keep every model setting
        own = set(MODEL_FIELDS)
    names = [f.name for f in dataclasses.fields(RunConfig) if f.name not in NOT_SETTINGS]
    return [n for n in names if n not in MODEL_FIELDS or n in own]


def varying_settings(runs: pd.DataFrame, family: str) -> list[str]:
    """The family's settings that take more than one value (an empty cell counts as a value) over `runs`."""
    out = []
    for name in family_settings(family):
        if name in runs.columns and runs[name].notna().any() and runs[name].nunique(dropna=False) > 1:
            out.append(name)
    return out


def default_color_by(runs: pd.DataFrame, family: str) -> str | None:
    """The varying setting with the most distinct values (ties: COLOR_PRIORITY, then RunConfig order)."""
    candidates = varying_settings(runs, family)
    if not candidates:
        return None
    rank = {name: i for i, name in enumerate(COLOR_PRIORITY)}
    return min(candidates, key=lambda c: (-runs[c].nunique(dropna=False), rank.get(c, len(rank)),
                                          candidates.index(c)))


def check_color_by(column: str | None) -> None:
    """A one-line PicoError unless `column` is a runs.csv column a run can be coloured by."""
    if column is None:
        return
    allowed = [c for c in TABLE_COLUMNS if c not in NOT_COLORS]
    if column not in allowed:
        close = difflib.get_close_matches(column, allowed, n=3)
        hint = f"did you mean {' or '.join(close)}? " if close else ""
        raise PicoError(f"--color_by {column!r} is not a setting or metric of runs.csv; {hint}choose e.g. "
                        f"{', '.join(COLOR_PRIORITY[:8])} (the header of runs.csv lists them all)")


def is_categorical(values: pd.Series, column: str) -> bool:
    """Text and yes/no settings are levels; numbers are a scale."""
    return (column in TEXT_COLUMNS or pd.api.types.is_bool_dtype(values)
            or not pd.api.types.is_numeric_dtype(values))


def log_scaled(values: pd.Series, column: str) -> bool:
    """Log scale for a positive rate, or for any positive setting that spans more than 10x."""
    v = pd.to_numeric(values, errors="coerce").dropna()
    if v.empty or (v <= 0).any():
        return False
    return column in LOG_SETTINGS or v.max() > 10 * v.min()


def fmt_value(v: Any) -> str:
    if isinstance(v, float | np.floating):
        if np.isnan(v):
            return MISSING_LEVEL
        return str(int(v)) if float(v).is_integer() and abs(v) < 1e6 else f"{v:.3g}"
    return str(v)


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


def _levels(values: pd.Series) -> list[Any]:
    """Distinct values in a stable order: numbers ascending, text alphabetically; an empty cell last."""
    present = values.dropna().unique().tolist()
    try:
        present = sorted(present)
    except TypeError:
        present = sorted(present, key=str)
    return present + ([np.nan] if values.isna().any() else [])


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
    distinct = _levels(values)
    if is_categorical(values, column) or len([d for d in distinct if not _is_nan(d)]) < 2:
        palette = plt.get_cmap("tab10").colors
        levels = {fmt_value(level): grey if _is_nan(level) else palette[i % len(palette)]
                  for i, level in enumerate(distinct)}
        colors = {i: levels[fmt_value(v)] for i, v in values.items()}
        return ColorScale(column, colors, levels=levels)
    numbers = pd.to_numeric(values, errors="coerce")
    low, high = numbers.min(), numbers.max()
    norm = LogNorm(low, high) if log_scaled(numbers, column) else Normalize(low, high)
    cmap = LINE_CMAP
    colors = {i: grey if np.isnan(v) else cmap(norm(v)) for i, v in numbers.items()}
    finite = [d for d in distinct if not _is_nan(d)]
    return ColorScale(column, colors, norm=norm, cmap=cmap,
                      ticks=nice_ticks(low, high, isinstance(norm, LogNorm), finite))


def _is_nan(v: Any) -> bool:
    return isinstance(v, float | np.floating) and np.isnan(v)


def _draw_color_key(fig: plt.Figure, axes: Any, scale: ColorScale, title: str) -> None:
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


# --------------------------------------------------------------------------------------------------
# learning-curve overlays
# --------------------------------------------------------------------------------------------------
def corpus_slug(corpus: Any) -> str:
    """A corpus as a file-name part: its name, or a local file's stem plus a hash of its path (stems collide)."""
    text = str(corpus)
    if "/" in text or "\\" in text or text.endswith(".txt"):
        digest = hashlib.sha256(text.encode()).hexdigest()[:6]
        text = f"{Path(text).stem}-{digest}"
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text) or "unknown"


def corpora(df: pd.DataFrame, family: str) -> list[str]:
    """The corpora a family's runs trained on, sorted ('unknown' for a run without one)."""
    runs = df[df["model"] == family]
    names = runs["corpus"].fillna("unknown").astype(str) if "corpus" in runs else pd.Series("unknown", runs.index)
    return sorted(names.unique())


def resolve_run_dir(run_dir: Any, analysis_dir: Path) -> Path | None:
    """A run's directory as the table records it: absolute, relative to the working directory, or relative to
    the analysis directory's parent (checkpoints/ and analysis_runs/ side by side); None when none exists."""
    if not isinstance(run_dir, str) or not run_dir.strip():
        return None
    path = Path(run_dir)
    for candidate in ([path] if path.is_absolute() else [path, Path(analysis_dir).resolve().parent / path]):
        if candidate.is_dir():
            return candidate
    return None


def load_curves(runs: pd.DataFrame, analysis_dir: Path) -> tuple[dict[Any, pd.DataFrame], dict[str, str]]:
    """Each run's metrics.csv (index of runs -> frame), and a one-line reason per run left out."""
    from picollm.runs.layout import read_metrics

    curves, missing = {}, {}
    for i, row in runs.iterrows():
        path = resolve_run_dir(row.get("run_dir"), analysis_dir)
        if path is None:
            recorded = row.get("run_dir")
            missing[str(row["run"])] = (f"run directory {recorded} not found (runs.csv moved without its "
                                        "checkpoints?)" if isinstance(recorded, str) and recorded.strip()
                                        else "no run_dir in runs.csv")
            continue
        try:
            metrics = read_metrics(path)
        except CheckpointError as e:
            missing[str(row["run"])] = str(e)
            continue
        curves[i] = metrics.replace([np.inf, -np.inf], np.nan)  # a diverged evaluation is a gap, not a spike
    return curves, missing


def plot_curves(df: pd.DataFrame, family: str, corpus: str, analysis_dir: Path, out: Path,
                color_by: str | None = None, notes: dict[str, str] | None = None) -> list[Path]:
    """curves_<family>_<corpus>.png; runs without a readable metrics.csv are left out with a note each."""
    runs = df[(df["model"] == family) & (df["corpus"].fillna("unknown").astype(str) == corpus)]
    if runs.empty:
        raise Skip(f"no {family} runs on {corpus}")
    curves, missing = load_curves(runs, analysis_dir)
    if not curves:
        first = next(iter(missing.items()))
        more = f" (+{len(missing) - 1} more)" if len(missing) > 1 else ""
        raise Skip(f"no {family} run on {corpus} has a readable metrics.csv: {first[0]}: {first[1]}{more}")
    if notes is not None:
        notes.update({f"curves[{run}]": reason for run, reason in missing.items()})
    drawn = runs.loc[list(curves)]
    column, why = curve_color(drawn, family, color_by)
    fig = curves_figure(curves, drawn, column, f"{family} on {corpus}: validation loss, {len(curves)} run(s){why}")
    png = out / f"curves_{family}_{corpus_slug(corpus)}.png"
    _save(fig, png)
    return [png]


def curve_color(runs: pd.DataFrame, family: str, color_by: str | None) -> tuple[str | None, str]:
    """The column to colour by and a note for the title when the user's choice does not apply."""
    if color_by and (color_by not in runs.columns or runs[color_by].isna().all()):
        fallback = default_color_by(runs, family)
        return fallback, f"\n({color_by} is not set for {family}; coloured by {fallback or 'run'} instead)"
    return (color_by or default_color_by(runs, family)), ""


def curves_figure(curves: dict[Any, pd.DataFrame], runs: pd.DataFrame, color_by: str | None, title: str) -> plt.Figure:
    """Three panels (x = step, tokens seen, training seconds), one line per run, coloured by `color_by`."""
    if color_by is None:  # nothing varies: tell the runs apart by name
        scale = color_scale(runs["run"].astype(str), "run")
        key = "run"
    else:
        scale = color_scale(runs[color_by], color_by)
        key = LABELS.get(color_by, color_by) + (" [log scale]" if isinstance(scale.norm, LogNorm) else "")
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6), sharey=True, layout="constrained")
    for ax, (x, label) in zip(axes, CURVE_X):
        for i, metrics in curves.items():
            if x in metrics.columns:
                ax.plot(metrics[x], metrics["val_loss"], color=scale.colors[i], lw=1.6, alpha=0.85,
                        marker="o", markersize=3)
        if not any(x in m.columns for m in curves.values()):
            ax.text(0.5, 0.5, f"no run recorded {x}", transform=ax.transAxes, ha="center", color="grey")
        ax.set(xlabel=label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(LABELS["val_loss"])
    _zoom_on_training(axes[0], curves)
    _draw_color_key(fig, axes, scale, key)
    fig.suptitle(title)
    return fig


def _zoom_on_training(ax: plt.Axes, curves: dict[Any, pd.DataFrame]) -> None:
    """Clip the y axis just above the first trained evaluation: the untrained loss (step 0) sits far above
    every later point and would squeeze the differences between runs into a sliver."""
    trained = [m.loc[m["step"] > 0, "val_loss"] for m in curves.values() if "step" in m.columns]
    values = pd.concat(trained).dropna() if trained else pd.Series(dtype=float)
    if values.empty:
        return
    low, high = values.min(), values.max()
    pad = 0.08 * (high - low) if high > low else 0.1 * abs(high) or 0.1
    ax.set_ylim(low - pad, high + 3 * pad)


# --------------------------------------------------------------------------------------------------
# hyperparameter importance
# --------------------------------------------------------------------------------------------------
def encode_settings(runs: pd.DataFrame, settings: list[str]) -> pd.DataFrame:
    """One numeric column per setting. Numbers stay numbers; levels (and a number column with empty cells)
    become ordinal codes, so that a setting stays one column and its permutation importance is its own
    rather than split across one-hot columns (a forest splits ordinal codes just as well)."""
    encoded = {}
    for name in settings:
        values = runs[name]
        if is_categorical(values, name) or values.isna().any():
            codes = {fmt_value(level): float(j) for j, level in enumerate(_levels(values))}
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
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.inspection import permutation_importance

    runs = df[df["model"] == family].assign(val_loss=lambda d: _numeric(d, "val_loss")).dropna(subset=["val_loss"])
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


def plot_importance(df: pd.DataFrame, family: str, out: Path) -> list[Path]:
    table, oob = importance_table(df, family)
    n = int(((df["model"] == family) & _numeric(df, "val_loss").notna()).sum())
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
           title=f"{family}: hyperparameter importance for val loss\n{n} runs, random forest, "
                 f"{N_REPEATS} shuffles per setting (bars: mean \u00b1 std); {fit}")
    ax.grid(axis="x", alpha=0.3)
    png, csv = out / f"importance_{family}.png", out / f"importance_{family}.csv"
    _save(fig, png)
    table.to_csv(csv, index=False)
    return [png, csv]


# --------------------------------------------------------------------------------------------------
# parallel coordinates
# --------------------------------------------------------------------------------------------------
@dataclass
class ParallelAxis:
    """One vertical axis: each run's position on it in [0, 1], its tick positions and labels, its scale."""

    name: str
    positions: pd.Series
    ticks: list[tuple[float, str]]
    scale: str  # "linear", "log" or "categorical"


def parallel_axis(values: pd.Series, name: str) -> ParallelAxis:
    """Levels evenly spaced and labelled; numbers scaled to [0, 1], on a log scale when log_scaled()."""
    if is_categorical(values, name) or values.isna().any():
        levels = _levels(values)
        spots = np.linspace(0, 1, len(levels)) if len(levels) > 1 else np.array([0.5])
        where = {fmt_value(level): float(s) for level, s in zip(levels, spots)}
        positions = values.map(lambda v: where[fmt_value(v)])
        return ParallelAxis(name, positions, [(p, label) for label, p in where.items()], "categorical")
    numbers = pd.to_numeric(values).astype(float)
    log = log_scaled(numbers, name)
    scaled = np.log10(numbers) if log else numbers
    low, high = scaled.min(), scaled.max()
    span = high - low if high > low else 1.0
    positions = (scaled - low) / span if high > low else scaled * 0 + 0.5
    distinct = sorted(numbers.unique())
    where = lambda m: float(((np.log10(m) if log else m) - low) / span) if high > low else 0.5
    ticks = [(where(m), fmt_value(m)) for m in nice_ticks(numbers.min(), numbers.max(), log, distinct)]
    if len(distinct) > 6:  # round numbers inside, and the ends labelled with the values the runs reach
        inner = [(p, label) for p, label in ticks if 0.08 < p < 0.92]
        ticks = [(0.0, fmt_value(distinct[0]))] + inner + [(1.0, fmt_value(distinct[-1]))]
    return ParallelAxis(name, positions, ticks, "log" if log else "linear")


def parallel_table(df: pd.DataFrame, family: str) -> tuple[list[ParallelAxis], pd.Series]:
    """The axes of a family's parallel-coordinates plot (its varying settings, then val loss) and val loss."""
    runs = df[df["model"] == family].assign(val_loss=lambda d: _numeric(d, "val_loss")).dropna(subset=["val_loss"])
    if len(runs) < 2:
        raise Skip(f"{len(runs)} {family} run(s) with a val_loss; parallel coordinates need at least 2")
    settings = varying_settings(runs, family)
    if not settings:
        raise Skip(f"no setting varies across the {len(runs)} {family} runs")
    axes = [parallel_axis(runs[name], name) for name in settings]
    axes.append(parallel_axis(runs["val_loss"], "val_loss"))
    return axes, runs["val_loss"]


def plot_parallel(df: pd.DataFrame, family: str, out: Path) -> list[Path]:
    """parallel_<family>.png. Drawn with matplotlib rather than pandas.plotting.parallel_coordinates, which
    puts every column on one shared linear scale, colours by class instead of by a number, and cannot label
    levels or use a log axis; plotly would need a browser engine to render a static PNG."""
    axes, loss = parallel_table(df, family)
    left_out = int((df["model"] == family).sum()) - len(loss)
    norm = Normalize(loss.min(), loss.max()) if loss.max() > loss.min() else Normalize(loss.min() - 1, loss.max() + 1)
    cmap = LINE_CMAP
    fig, ax = plt.subplots(figsize=(max(6.0, 1.9 * len(axes) + 1.5), 5.2), layout="constrained")
    xs = np.arange(len(axes))
    for i in loss.sort_values(ascending=False).index:  # the best runs drawn last, on top
        ax.plot(xs, [a.positions[i] for a in axes], color=cmap(norm(loss[i])), lw=1.8, alpha=0.85)
    for x, a in zip(xs, axes):
        ax.axvline(x, color="black", lw=1)
        right = x == xs[-1]  # the val-loss axis is labelled outside, where no line crosses
        for pos, label in a.ticks:
            ax.plot([x - 0.02, x + 0.02], [pos, pos], color="black", lw=1)
            ax.text(x + (0.04 if right else -0.04), pos, label, ha="left" if right else "right", va="center", fontsize=8,
                    bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8})
    names = [LABELS.get(a.name, a.name) + {"log": "\n[log scale]", "categorical": "\n[levels]"}.get(a.scale, "")
             for a in axes]
    ax.set_xticks(xs, names)
    ax.set_yticks([])
    ax.set_xlim(-0.45, len(axes) - 0.55)
    ax.set_ylim(-0.06, 1.06)
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)
    bar = fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, pad=0.01, fraction=0.04)
    bar.set_label(LABELS["val_loss"] + ", lower is better")
    note = f"; {left_out} run(s) without a val_loss left out" if left_out else ""
    ax.set_title(f"{family}: settings -> validation loss, {len(loss)} run(s){note}")
    png = out / f"parallel_{family}.png"
    _save(fig, png)
    return [png]


def draw_comparisons(df: pd.DataFrame, analysis_dir: Path, out: Path, color_by: str | None,
                     attempt: Any, notes: dict[str, str]) -> None:
    """Every comparison plot, each through summarize's attempt(name, draw) so one that fails costs no other."""
    for fam in families(df):
        for corpus in corpora(df, fam):
            attempt(f"curves_{fam}_{corpus_slug(corpus)}",
                    lambda fam=fam, corpus=corpus: plot_curves(df, fam, corpus, analysis_dir, out, color_by, notes))
        attempt(f"importance_{fam}", lambda fam=fam: plot_importance(df, fam, out))
        attempt(f"parallel_{fam}", lambda fam=fam: plot_parallel(df, fam, out))
