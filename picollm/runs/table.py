"""The table of all runs: its schema, its one reader and its one writer.

The rows live in analysis_runs/runs.sqlite (SQLite in WAL mode, the embedded store MLflow and Optuna use):
each run's analysis upserts its row as soon as it finishes, in one short transaction, so concurrent
analyses never block each other for long, a crash loses no finished row, and adding a row costs the same
at 100,000 rows as at 10. analysis_runs/runs.csv is the database's export, sorted by run, cells
as text, so its content depends only on the set of rows, never on the order they arrived in; it is what
people open in a spreadsheet. A runs.csv without a database beside it (written by hand, or an older
analysis's summary_cache.csv) is read, validated and imported on the next write.

Light to import (no torch): the study and the report read it too.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import closing, contextmanager
from dataclasses import fields
from pathlib import Path
from typing import Any

import pandas as pd
from filelock import FileLock

from picollm.config import RunConfig
from picollm.core.atomic import atomic_write_text, disk_full_error
from picollm.core.errors import CheckpointError
from picollm.models import FAMILIES

TABLE_NAME = "runs.csv"
#: the export's name until 2026-11-28: an analysis folder holding only this is imported from it
LEGACY_TABLE_NAME = "summary_cache.csv"
DB_NAME = "runs.sqlite"
#: seconds a writer waits for another's transaction (each is one row: milliseconds) before giving up
BUSY_TIMEOUT_S = 120
#: training-frequency buckets of a test token (picollm.analyze.analysis counts the tokens of each)
BUCKETS = ("rare", "medium", "frequent")
#: every RunConfig setting, by its own name (empty where the family ignores it)
CONFIG_COLUMNS = [f.name for f in fields(RunConfig) if f.name != "model"]
#: the schema of analysis_runs/runs.csv (plots and the HTML report read it; keep it stable)
TABLE_COLUMNS = (
    ["run", "run_dir", "fingerprint", "model"]
    + CONFIG_COLUMNS
    + ["learning_rate", "params", "vocab_size", "status", "status_reason", "steps", "train_seconds",
       "tokens_per_sec", "initial_val_loss", "final_train_loss", "final_val_loss", "val_loss", "val_ppl",
       "token_accuracy", "best_step", "test_loss", "test_ppl", "test_acc"]
    + [f"test_ppl_{b}" for b in BUCKETS] + [f"test_tokens_{b}" for b in BUCKETS] + ["analyzed_at"]
)
#: columns that legitimately differ between two analyses of the same runs
TIMING_COLUMNS = ("analyzed_at",)


#: text columns of runs.csv; every other column holds a number or nothing (a diverged run has no loss)
TEXT_COLUMNS = frozenset(["run", "run_dir", "fingerprint", "model", "status", "status_reason", "analyzed_at"]
                                 + [f.name for f in fields(RunConfig) if isinstance(f.default, (str, bool))])
#: what pandas reads as a missing number: such a cell is empty, not text in a numeric column
_NA_WORDS = frozenset(["", "nan", "-nan", "na", "n/a", "#n/a", "null", "none", "<na>"])
_SHOWN_LINES = 3  # bad lines named per problem, so a table of garbage still gives a one-line error
_TABLE_FIX = "delete those rows, or delete the file and re-run analyze_all_checkpoints.py to rebuild it"
#: the fix for a runs.sqlite that cannot be read: never replaced silently, since it may hold the only copy of
#: rows; deleted, the next analysis makes it again from runs.csv beside it (its last export) and the runs'
#: analyses (analysis_runs/<run>/summary.json)
_DB_FIX = "delete it and run `picollm analyze-all` again to rebuild it from runs.csv and the runs' analyses"


def _line_list(lines: list[int]) -> str:
    shown = ", ".join(map(str, lines[:_SHOWN_LINES]))
    more = f" (+{len(lines) - _SHOWN_LINES} more)" if len(lines) > _SHOWN_LINES else ""
    return f"line{'s' if len(lines) > 1 else ''} {shown}{more}"


def _decode(path: Path) -> str:
    """The file's text; a CheckpointError naming the lines with bytes that are not UTF-8."""
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
    return text


def _parse(text: str, path: Path) -> tuple[list[str], list[list[str]], list[int]]:
    """Header, data rows and the line each row ends on; a CheckpointError for a row of the wrong shape."""
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
    return header, body, lines[1:]


def _bad_cells(header: list[str], body: list[list[str]], lines: list[int], required: Iterable[str]) -> list[str]:
    """One phrase per column with bad cells: what is wrong, on which lines, and an example."""
    problems = []
    for i, name in enumerate(header):
        cells = pd.Series([row[i] for row in body], dtype=object)
        empty = cells.str.strip().str.lower().isin(_NA_WORDS)
        if name in TABLE_COLUMNS and name not in TEXT_COLUMNS:
            bad, what = ~empty & pd.to_numeric(cells, errors="coerce").isna(), "is not a number"
        elif name == "model":
            bad, what = ~empty & ~cells.isin(list(FAMILIES)), f"is not a model family ({', '.join(FAMILIES)})"
        else:
            bad, what = pd.Series(False, index=cells.index), ""
        if name in required and name in TEXT_COLUMNS:
            bad, what = bad | empty, f"is empty{' or ' + what.removeprefix('is ') if what else ''}"
        if bad.any():
            where = [lines[j] for j in bad[bad].index]
            example = next((v for v in cells[bad] if v.strip()), "")
            problems.append(f"{name} {what} on {_line_list(where)}" + (f" (e.g. {example!r})" if example else ""))
    return problems


def read_table(path: str | Path, required: Iterable[str] = ("run",)) -> pd.DataFrame:
    """The table of all runs as a DataFrame with exactly TABLE_COLUMNS (empty when there is none).

    path names runs.csv; the database beside it is read when there is one (its rows are the
    truth, the csv only their last export). A csv alone is checked before pandas sees it, since pandas
    silently pads a short row, shifts a long one into the index and draws a text cell as a category: a
    one-line CheckpointError names the file, the bad lines and the fix for bytes that are not UTF-8, a row
    with the wrong number of fields, a `required` column that is missing (or, for a text column, empty in a
    row), text in a numeric column and an unknown model family. An empty numeric cell is fine.
    """
    path = Path(path)
    if (path.parent / DB_NAME).exists():  # rows picollm wrote itself: no need to check every cell
        return _text_as_object(pd.read_csv(io.StringIO(_export_text(path.parent))).reindex(columns=TABLE_COLUMNS))
    if not path.exists():
        return pd.DataFrame(columns=TABLE_COLUMNS)
    return _text_as_object(_checked_table(_decode(path), path, required))


def _text_as_object(table: pd.DataFrame) -> pd.DataFrame:
    """pandas reads a text column with no value in any row as float NaN, and as object once one row has a
    value: set it to object, so that a table's dtypes do not depend on which runs it holds (one family's switch,
    such as the LSTM's locked_dropout, is empty in a table without that family)."""
    empty = [c for c in TEXT_COLUMNS if c in table.columns and table[c].isna().all()]
    return table.astype(dict.fromkeys(empty, object)) if empty else table


def _checked_table(text: str, path: Path, required: Iterable[str]) -> pd.DataFrame:
    header, body, lines = _parse(text, path)
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
    return table.reindex(columns=TABLE_COLUMNS)


def _cell(value: Any) -> str:
    """A value's csv text, from the value alone: a row reads the same whatever rows share the table."""
    if hasattr(value, "item"):  # numpy / torch scalars
        value = value.item()
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return repr(value)  # shortest text that reads back as the same float
    return str(value)


@contextmanager
def _damage_is_one_line(db: Path) -> Iterator[None]:
    """SQLite's errors for a database that is not the table of runs (not a database at all, cut off, another
    schema, cells that are not JSON objects) as one CheckpointError naming it and the fix. A busy or full
    database is not damage: those errors pass through."""
    try:
        yield
    except sqlite3.OperationalError as e:
        if not str(e).startswith(("no such table", "no such column", "table runs has no column")):
            raise
        raise CheckpointError(f"{db} is not a table of runs ({e}); {_DB_FIX}") from None
    except (sqlite3.DatabaseError, ValueError, TypeError) as e:  # "file is not a database", "... malformed"
        raise CheckpointError(f"{db} is damaged ({e.__class__.__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                              f"{_DB_FIX}") from None


def _connect(db: Path) -> sqlite3.Connection:
    con = sqlite3.connect(db, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    con.execute("PRAGMA synchronous=NORMAL")  # in WAL mode a crash still leaves the database consistent
    return con


_OPEN: dict[tuple[int, str], tuple[int, sqlite3.Connection]] = {}


def _shared_connection(db: Path) -> sqlite3.Connection:
    """This process's connection to db, kept open: closing the last connection checkpoints the whole WAL
    into the database, which made a connection per row cost ~25 ms at 100,000 rows instead of ~1 ms."""
    key, inode = (os.getpid(), str(db.resolve())), db.stat().st_ino
    cached = _OPEN.get(key)
    if cached and cached[0] == inode:
        return cached[1]
    if cached:  # the database was deleted and made again
        cached[1].close()
    con = _connect(db)
    _OPEN[key] = (inode, con)
    return con


def _create(analysis_dir: Path) -> None:
    """Make the database (WAL mode, one table), seeded with an older csv's rows, under a temporary name and
    then renamed into place: no process ever opens a half-made database."""
    db = analysis_dir / DB_NAME
    with FileLock(analysis_dir / f".{DB_NAME}.lock"):
        if db.exists():
            return
        for orphan in (f"{DB_NAME}-wal", f"{DB_NAME}-shm"):  # a deleted database's log: SQLite would replay it
            (analysis_dir / orphan).unlink(missing_ok=True)  # into the new one
        tmp = analysis_dir / f".{DB_NAME}.tmp"
        tmp.unlink(missing_ok=True)
        with closing(_connect(tmp)) as con:
            con.execute("PRAGMA journal_mode=WAL")  # persistent: readers never wait, writers only for each other
            # one JSON object of text cells per run: the schema can grow (new settings) without migrations
            con.execute("CREATE TABLE runs (run TEXT PRIMARY KEY, cells TEXT NOT NULL)")
            csv_path = analysis_dir / TABLE_NAME
            _write(con, _legacy_rows(csv_path if csv_path.exists() else analysis_dir / LEGACY_TABLE_NAME))
        os.replace(tmp, db)


def _row_cells(row: dict[str, Any]) -> str:
    cells = ((c, _cell(row.get(c))) for c in TABLE_COLUMNS)
    return json.dumps({c: v for c, v in cells if v != ""}, sort_keys=True)


def upsert_rows(analysis_dir: str | Path, rows: list[dict[str, Any]]) -> None:
    """Insert or replace these rows (by run) in the database, in one transaction. A runs.csv
    without a database (an older analysis) is imported first, so none of its rows is lost."""
    analysis_dir = Path(analysis_dir)
    if not (analysis_dir / DB_NAME).exists():
        analysis_dir.mkdir(parents=True, exist_ok=True)
        _create(analysis_dir)
    if rows:
        db, items = analysis_dir / DB_NAME, [(str(r["run"]), _row_cells(r)) for r in rows]
        with _damage_is_one_line(db):
            _write(_shared_connection(db), items)


def _write(con: sqlite3.Connection, items: list[tuple[str, str]]) -> None:
    if not items:
        return
    con.execute("BEGIN IMMEDIATE")
    try:
        con.executemany("INSERT INTO runs (run, cells) VALUES (?, ?) "
                        "ON CONFLICT(run) DO UPDATE SET cells = excluded.cells", items)
        con.execute("COMMIT")
    except BaseException as e:
        if con.in_transaction:  # a COMMIT that found the disk full has rolled back already
            con.execute("ROLLBACK")
        if isinstance(e, sqlite3.OperationalError) and "full" in str(e):  # SQLITE_FULL: "database or disk is full"
            raise disk_full_error(con.execute("PRAGMA database_list").fetchone()[2]) from None
        raise


def _legacy_rows(csv_path: Path) -> list[tuple[str, str]]:
    """The rows of a runs.csv written before the database, cells kept exactly as written."""
    if not csv_path.exists():
        return []
    _checked_table(_decode(csv_path), csv_path, ("run",))  # a broken table is refused, not imported
    old = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    return [(r["run"], json.dumps({c: v for c, v in r.items() if c in TABLE_COLUMNS and v != ""}, sort_keys=True))
            for r in old.to_dict("records")]


def _export_text(analysis_dir: Path) -> str:
    """The csv text of every row in the database, sorted by run."""
    db = analysis_dir / DB_NAME
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(TABLE_COLUMNS)
    with _damage_is_one_line(db):
        for (cells,) in _shared_connection(db).execute("SELECT cells FROM runs ORDER BY run").fetchall():
            d = json.loads(cells)
            if not isinstance(d, dict):
                raise ValueError(f"a row's cells are a JSON {type(d).__name__}, not an object")
            writer.writerow([d.get(c, "") for c in TABLE_COLUMNS])
    return out.getvalue()


def export_table(analysis_dir: str | Path) -> Path:
    """Write runs.csv from the database (atomically); return its path."""
    analysis_dir = Path(analysis_dir)
    path = analysis_dir / TABLE_NAME
    if (analysis_dir / DB_NAME).exists():
        text = _export_text(analysis_dir)
        if not path.exists() or path.read_bytes() != text.encode():  # unchanged rows leave the file (and its mtime) alone
            atomic_write_text(path, text)
    return path


def update_table(path: str | Path, rows: list[dict[str, Any]]) -> None:
    """Insert or replace the rows (by run) of the table whose csv is `path`, then re-export the csv.

    Exporting is O(rows in the table): for many rows one after another (an analysis), call upsert_rows per
    row and export_table once at the end instead.
    """
    if not rows:
        return
    upsert_rows(Path(path).parent, rows)
    export_table(Path(path).parent)
