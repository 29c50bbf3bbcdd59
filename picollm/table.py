"""The table of all runs, analysis_runs/summary_cache.csv: its schema, its one reader and its one writer.

Rows are added as each run's analysis finishes, by read-modify-atomic-replace under a file lock, so a crash
loses no finished row and concurrent analyses never corrupt the table; its columns (SUMMARY_COLUMNS) and its
row order (by run) do not depend on which run finished first. Light to import (no torch): the summary and
the report read it too.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable
from dataclasses import fields
from pathlib import Path
from typing import Any

import pandas as pd
from filelock import FileLock

from picollm.config import RunConfig
from picollm.errors import CheckpointError
from picollm.runs import atomic_write_text

TABLE_NAME = "summary_cache.csv"
#: training-frequency buckets of a test token (picollm.analysis counts the tokens of each)
BUCKETS = ("rare", "medium", "frequent")
#: every RunConfig setting, by its own name (empty where the family ignores it)
CONFIG_COLUMNS = [f.name for f in fields(RunConfig) if f.name != "model"]
#: the schema of analysis_runs/summary_cache.csv (plots and the HTML report read it; keep it stable)
SUMMARY_COLUMNS = (
    ["run", "run_dir", "fingerprint", "model"]
    + CONFIG_COLUMNS
    + ["learning_rate", "params", "vocab_size", "status", "status_reason", "steps", "train_seconds",
       "tokens_per_sec", "initial_val_loss", "final_train_loss", "final_val_loss", "val_loss", "val_ppl",
       "token_accuracy", "best_step", "test_loss", "test_ppl", "test_acc"]
    + [f"test_ppl_{b}" for b in BUCKETS] + [f"test_tokens_{b}" for b in BUCKETS] + ["analyzed_at"]
)
#: columns that legitimately differ between two analyses of the same runs
TIMING_COLUMNS = ("analyzed_at",)


#: text columns of summary_cache.csv; every other column holds a number or nothing (a diverged run has no loss)
SUMMARY_TEXT_COLUMNS = frozenset(["run", "run_dir", "fingerprint", "model", "status", "status_reason", "analyzed_at"]
                                 + [f.name for f in fields(RunConfig) if isinstance(f.default, (str, bool))])
#: what pandas reads as a missing number: such a cell is empty, not text in a numeric column
_NA_WORDS = frozenset(["", "nan", "-nan", "na", "n/a", "#n/a", "null", "none", "<na>"])
_SHOWN_LINES = 3  # bad lines named per problem, so a table of garbage still gives a one-line error
_TABLE_FIX = "delete those rows, or delete the file and re-run analyze_all_checkpoints.py to rebuild it"


def _line_list(lines: list[int]) -> str:
    shown = ", ".join(map(str, lines[:_SHOWN_LINES]))
    more = f" (+{len(lines) - _SHOWN_LINES} more)" if len(lines) > _SHOWN_LINES else ""
    return f"line{'s' if len(lines) > 1 else ''} {shown}{more}"


def _table_text(path: Path) -> tuple[str, list[str], list[list[str]], list[int]]:
    """The file's text, header, data rows and the line each row ends on; CheckpointError for bad bytes or shape."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")  # a spreadsheet's byte-order mark is not part of the first column's name
    except UnicodeDecodeError:
        bad = []
        for number, line in enumerate(data.split(b"\n"), 1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                bad.append(number)
        raise CheckpointError(f"{path} is not UTF-8 text (bad bytes on {_line_list(bad)}); {_TABLE_FIX}") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    rows, lines = [], []
    try:
        for row in reader:
            if row:  # pandas skips blank lines too
                rows.append(row)
                lines.append(reader.line_num)
    except csv.Error as e:
        raise CheckpointError(f"{path} line {reader.line_num} is not CSV ({e}); {_TABLE_FIX}") from None
    if not rows:
        raise CheckpointError(f"{path} is empty; delete it and re-run analyze_all_checkpoints.py to rebuild it")
    header, body = rows[0], rows[1:]
    ragged = [n for n, row in zip(lines[1:], body) if len(row) != len(header)]
    if ragged:
        raise CheckpointError(f"{path} {_line_list(ragged)}: not {len(header)} fields like the header (a row cut off "
                              f"or run together); {_TABLE_FIX}")
    return text, header, body, lines[1:]


def _bad_cells(header: list[str], body: list[list[str]], lines: list[int], required: Iterable[str]) -> list[str]:
    """One phrase per column with bad cells: what is wrong, on which lines, and an example."""
    problems = []
    for i, name in enumerate(header):
        cells = pd.Series([row[i] for row in body], dtype=object)
        empty = cells.str.strip().str.lower().isin(_NA_WORDS)
        if name in SUMMARY_COLUMNS and name not in SUMMARY_TEXT_COLUMNS:
            bad, what = ~empty & pd.to_numeric(cells, errors="coerce").isna(), "is not a number"
        elif name == "model":
            from picollm.models import FAMILIES  # imported here: the model registry brings torch

            bad, what = ~empty & ~cells.isin(list(FAMILIES)), f"is not a model family ({', '.join(FAMILIES)})"
        else:
            bad, what = pd.Series(False, index=cells.index), ""
        if name in required and name in SUMMARY_TEXT_COLUMNS:
            bad, what = bad | empty, f"is empty{' or ' + what.removeprefix('is ') if what else ''}"
        if bad.any():
            where = [lines[j] for j in bad[bad].index]
            example = next((v for v in cells[bad] if v.strip()), "")
            problems.append(f"{name} {what} on {_line_list(where)}" + (f" (e.g. {example!r})" if example else ""))
    return problems


def read_summary_table(path: str | Path, required: Iterable[str] = ("run",)) -> pd.DataFrame:
    """summary_cache.csv as a DataFrame with exactly SUMMARY_COLUMNS (empty when it does not exist).

    The table is checked before pandas sees it, since pandas silently pads a short row, shifts a long one
    into the index and draws a text cell as a category: a one-line CheckpointError names the file, the bad
    lines and the fix for bytes that are not UTF-8, a row with the wrong number of fields, a `required` column
    that is missing (or, for a text column, empty in a row), text in a numeric column and an unknown model
    family. An empty numeric cell is fine.
    """
    path = Path(path)
    if not path.exists():
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    text, header, body, lines = _table_text(path)
    required = list(required)
    missing = [c for c in required if c not in header]
    if missing:
        raise CheckpointError(f"{path} has no {', '.join(missing)} column (not a table written by "
                              "analyze_all_checkpoints.py); delete it and re-run analyze_all_checkpoints.py to rebuild it")
    problems = _bad_cells(header, body, lines, required)
    if problems:
        more = f"; and {len(problems) - 2} more column(s)" if len(problems) > 2 else ""
        raise CheckpointError(f"{path}: {'; '.join(problems[:2])}{more}; {_TABLE_FIX}")
    table = pd.read_csv(io.StringIO(text))
    return table.reindex(columns=SUMMARY_COLUMNS)


def _cell(value: Any) -> str:
    """A value's csv text, from the value alone: a row reads the same whatever rows share the table."""
    if hasattr(value, "item"):  # numpy / torch scalars
        value = value.item()
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return repr(value)  # shortest text that reads back as the same float
    return str(value)


def update_summary_table(path: str | Path, rows: list[dict[str, Any]]) -> None:
    """Insert or replace the rows (by run) of the table, under a lock, by atomic replace; sorted by run.

    Cells are kept as text (old rows exactly as written, new ones through _cell), so the file's content
    depends only on the set of rows, not on the order in which they arrived.
    """
    path = Path(path)
    if not rows:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(path.with_name(path.name + ".lock")):  # the OS drops it if the holder dies
        old = pd.DataFrame(columns=SUMMARY_COLUMNS)
        if path.exists():
            try:
                old = pd.read_csv(path, dtype=str, keep_default_na=False)
            except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
                raise CheckpointError(f"{path} is corrupt ({e.__class__.__name__}); delete it and re-run "
                                      "analyze_all_checkpoints.py") from None
            old = old.reindex(columns=SUMMARY_COLUMNS, fill_value="")
        new = pd.DataFrame([[_cell(r.get(c)) for c in SUMMARY_COLUMNS] for r in rows], columns=SUMMARY_COLUMNS)
        old = old[~old["run"].isin(new["run"])]
        table = pd.concat([df for df in (old, new) if len(df)], ignore_index=True)
        table = table.sort_values("run", kind="stable").reset_index(drop=True)
        atomic_write_text(path, table.to_csv(index=False))
