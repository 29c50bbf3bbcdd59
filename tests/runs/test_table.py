import sqlite3
from contextlib import closing

import pandas as pd
import pytest

from picollm.core.errors import DiskFullError
from picollm.runs.table import (
    DB_NAME,
    LEGACY_TABLE_NAME,
    TABLE_COLUMNS,
    TABLE_NAME,
    export_table,
    read_table,
    upsert_rows,
)


def row(run: str, **values) -> dict:
    return {"run": run, "model": "lstm", "val_loss": 2.0, **values}


def test_rows_are_upserted_and_the_export_depends_only_on_the_set_of_rows(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for r in (row("x", val_loss=1.5), row("y"), row("x", val_loss=1.25)):
        upsert_rows(a, [r])
    upsert_rows(b, [row("y")])
    upsert_rows(b, [row("x", val_loss=1.25)])
    assert export_table(a).read_text() == export_table(b).read_text()
    table = read_table(a / TABLE_NAME)
    assert list(table.columns) == TABLE_COLUMNS and list(table["run"]) == ["x", "y"]
    assert table["val_loss"].tolist() == [1.25, 2.0]


def test_a_column_has_the_same_dtype_whichever_runs_the_table_holds(tmp_path):
    # locked_dropout is the LSTM's switch: empty for a transformer, so a table without an LSTM has no value in it
    both, one = tmp_path / "both", tmp_path / "one"
    upsert_rows(both, [row("a", locked_dropout=False), row("b", model="transformer")])
    upsert_rows(one, [row("b", model="transformer")])
    whole = read_table(both / TABLE_NAME)
    whole = whole[whole["run"] == "b"].reset_index(drop=True)
    pd.testing.assert_frame_equal(whole, read_table(one / TABLE_NAME))  # the database's export
    export_table(one)
    (one / DB_NAME).unlink()
    pd.testing.assert_frame_equal(whole, read_table(one / TABLE_NAME))  # the csv alone, checked


@pytest.mark.parametrize("name", [TABLE_NAME, LEGACY_TABLE_NAME])
def test_an_older_csv_is_imported_with_its_cells_as_written(tmp_path, name):
    old = pd.DataFrame([{"run": "old-run", "model": "transformer", "val_loss": "1.2345678901234567"}])
    old.reindex(columns=TABLE_COLUMNS).to_csv(tmp_path / name, index=False)
    upsert_rows(tmp_path, [row("new-run")])
    assert (tmp_path / DB_NAME).exists()
    text = export_table(tmp_path).read_text()
    assert "1.2345678901234567" in text
    assert list(read_table(tmp_path / TABLE_NAME)["run"]) == ["new-run", "old-run"]


def test_the_database_is_the_truth_when_the_csv_is_lost(tmp_path):
    upsert_rows(tmp_path, [row("x"), row("y")])
    assert not (tmp_path / TABLE_NAME).exists()  # not exported yet: the rows are still there
    assert list(read_table(tmp_path / TABLE_NAME)["run"]) == ["x", "y"]
    export_table(tmp_path)
    (tmp_path / TABLE_NAME).unlink()
    assert export_table(tmp_path).exists()


def test_a_deleted_and_recreated_database_is_reopened(tmp_path):
    upsert_rows(tmp_path, [row("x")])
    (tmp_path / DB_NAME).unlink()
    for suffix in ("-wal", "-shm"):
        (tmp_path / (DB_NAME + suffix)).unlink(missing_ok=True)
    upsert_rows(tmp_path, [row("y")])
    assert list(read_table(tmp_path / TABLE_NAME)["run"]) == ["y"]


def test_a_full_disk_while_adding_a_row_is_one_line_and_keeps_the_rows_before(small_disk):
    upsert_rows(small_disk, [row("kept")])
    with pytest.raises(DiskFullError) as err:
        for i in range(1000):  # rows of ~10 KB each, until the 256 KiB disk is full
            upsert_rows(small_disk, [row(f"r{i}", status_reason="x" * 10_000)])
    assert len(str(err.value).splitlines()) == 1 and str(small_disk / DB_NAME) in str(err.value)
    assert "free space and run the same command again" in str(err.value)
    with closing(sqlite3.connect(small_disk / DB_NAME)) as con:  # reading needs no room
        assert con.execute("SELECT count(*) FROM runs WHERE run = 'kept'").fetchone() == (1,)
