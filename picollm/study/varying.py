"""Which settings a family has and which of them vary across runs; how a setting's values read (levels or
numbers, log or linear); which one colours the overlays. No matplotlib.

A family's settings are the RunConfig settings it uses: the shared ones (data, optimisation) and its own
model settings (picollm.models.family_fields); never where or how a run ran, nor its seed.
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any

import numpy as np
import pandas as pd

from picollm.config import MODEL_FIELDS, RUNTIME_FIELDS, RunConfig
from picollm.core.errors import PicoError
from picollm.models import family_fields
from picollm.runs.table import TABLE_COLUMNS, TEXT_COLUMNS

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
MISSING_LEVEL = "none"  # the level of a setting left empty (e.g. max_steps when a run trained for epochs)


def family_settings(family: str) -> list[str]:
    """The RunConfig settings `family` uses, in RunConfig's order: the shared ones plus its own model settings."""
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
    """A value as a label: whole numbers without a decimal point, others to 3 digits, empty as MISSING_LEVEL."""
    if isinstance(v, float | np.floating):
        if np.isnan(v):
            return MISSING_LEVEL
        return str(int(v)) if float(v).is_integer() and abs(v) < 1e6 else f"{v:.3g}"
    return str(v)


def levels(values: pd.Series) -> list[Any]:
    """Distinct values in a stable order: numbers ascending, text alphabetically; an empty cell last."""
    present = values.dropna().unique().tolist()
    try:
        present = sorted(present)
    except TypeError:
        present = sorted(present, key=str)
    return present + ([np.nan] if values.isna().any() else [])


def is_nan(v: Any) -> bool:
    return isinstance(v, float | np.floating) and np.isnan(v)
