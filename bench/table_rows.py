#!/usr/bin/env python
"""Cost of adding one run's row to the table of all runs, as the table grows.

    python bench/table_rows.py [--rows 100000] [--adds 200] [--csv_rows 10000]

Fills a fresh table with --rows rows (one bulk transaction), then adds --adds rows one at a time the way
analysis workers do (a new connection and transaction each: upsert_rows) and prints the milliseconds per
row. For comparison it times the old way, a read-modify-atomic-replace of the whole runs.csv per
row, at --csv_rows rows (it is O(rows) per row, so it is measured at a smaller table). Finally it exports
the csv once and reads the whole table back, the two whole-table operations an analysis does once.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from picollm.core.atomic import atomic_write_text  # noqa: E402
from picollm.runs.table import TABLE_COLUMNS, TABLE_NAME, export_table, read_table, upsert_rows  # noqa: E402


def fake_row(i: int, rng: random.Random) -> dict:
    return {"run": f"transformer-tinyshakespeare-{i:08x}", "run_dir": f"checkpoints/run{i}", "model": "transformer",
            "corpus": "tinyshakespeare", "embed": rng.choice([32, 64, 128]), "layers": rng.choice([1, 2, 4]),
            "lr": rng.choice([1e-3, 3e-3]), "learning_rate": 1e-3, "params": rng.randint(10_000, 10**6),
            "status": "done", "val_loss": rng.uniform(1.4, 2.5), "test_ppl": rng.uniform(4, 12),
            "analyzed_at": "2026-11-28T12:00:00"}


def csv_rewrite_per_row(path: Path, table: pd.DataFrame, row: dict) -> pd.DataFrame:
    """The pre-database writer: read the whole csv, replace the row, sort, write the whole csv back."""
    old = pd.read_csv(path, dtype=str, keep_default_na=False)
    new = pd.DataFrame([{c: str(row.get(c, "")) for c in TABLE_COLUMNS}])
    table = pd.concat([old[old["run"] != row["run"]], new]).sort_values("run")
    atomic_write_text(path, table.to_csv(index=False))
    return table


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--adds", type=int, default=200)
    p.add_argument("--csv_rows", type=int, default=10_000)
    args = p.parse_args()
    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as tmp:
        db_dir, csv_dir = Path(tmp) / "db", Path(tmp) / "csv"
        t = time.perf_counter()
        upsert_rows(db_dir, [fake_row(i, rng) for i in range(args.rows)])
        print(f"filled the database with {args.rows:,} rows in {time.perf_counter() - t:.1f} s")
        t = time.perf_counter()
        for i in range(args.adds):
            upsert_rows(db_dir, [fake_row(args.rows + i, rng)])
        db_ms = 1000 * (time.perf_counter() - t) / args.adds
        print(f"database: {db_ms:.2f} ms per added row at {args.rows:,} rows ({args.adds} rows, one transaction each)")

        csv_dir.mkdir()
        path = csv_dir / TABLE_NAME
        seed = pd.DataFrame([{c: fake_row(i, rng).get(c, "") for c in TABLE_COLUMNS} for i in range(args.csv_rows)])
        seed.to_csv(path, index=False)
        adds = max(5, args.adds // 20)
        t = time.perf_counter()
        for i in range(adds):
            csv_rewrite_per_row(path, seed, fake_row(args.csv_rows + i, rng))
        csv_ms = 1000 * (time.perf_counter() - t) / adds
        print(f"csv rewrite (before): {csv_ms:.2f} ms per added row at {args.csv_rows:,} rows ({adds} rows)")
        print(f"ratio: the database adds a row {csv_ms / db_ms:.0f}x faster at {args.rows // args.csv_rows}x "
              "the table size")

        t = time.perf_counter()
        export_table(db_dir)
        export_s = time.perf_counter() - t
        t = time.perf_counter()
        table = read_table(db_dir / TABLE_NAME)
        print(f"export of {len(table):,} rows to csv: {export_s:.2f} s; read back: "
              f"{time.perf_counter() - t:.2f} s")


if __name__ == "__main__":
    main()
