"""Damaging files the way files get damaged, and running picollm's commands on them (test_damaged_files.py)."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import torch

from picollm.cli.main import main as picollm_main
from picollm.core.commands import run_cli
from picollm.core.log import get_logger

ROOT = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------------------------------
# damages: each rewrites the file at path
# --------------------------------------------------------------------------------------------------
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 8
Damage = Callable[[Path], None]


def empty(path: Path) -> None:
    path.write_bytes(b"")


def cut(path: Path) -> None:
    """Cut off mid-write: the first half of the file."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def png(path: Path) -> None:
    path.write_bytes(PNG)


def text(content: str) -> Damage:
    """Another text format where this one belongs (JSON where CSV is, CSV where JSON is, ...)."""
    return lambda path: path.write_text(content)


def edit_json(change: Callable[[dict], object]) -> Damage:
    """The right format, changed: change(d) edits the dict in place or returns what replaces it."""
    def damage(path: Path) -> None:
        d = json.loads(path.read_text())
        out = change(d)
        path.write_text(json.dumps(d if out is None else out))
    return damage


def edit_csv(change: Callable[[pd.DataFrame], pd.DataFrame]) -> Damage:
    return lambda path: path.write_text(change(pd.read_csv(path)).to_csv(index=False))


def edit_pt(change: Callable[[dict], object]) -> Damage:
    def damage(path: Path) -> None:
        ckpt = torch.load(path, weights_only=True)
        out = change(ckpt)
        torch.save(ckpt if out is None else out, path)
    return damage


def drop(key: str) -> Callable[[dict], None]:
    """Delete a key (of a JSON object or a checkpoint's dict)."""
    def change(d: dict) -> None:
        del d[key]
    return change


def text_column(column: str) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """The column holds words where numbers belong."""
    return lambda df: df.assign(**{column: "fast"})


def sqlite_db(*statements: str) -> Damage:
    """A real SQLite database, but not the table of runs picollm writes."""
    def damage(path: Path) -> None:
        path.unlink()
        with contextlib.closing(sqlite3.connect(path)) as con:
            for sql in statements:
                con.execute(sql)
            con.commit()
    return damage


# --------------------------------------------------------------------------------------------------
# running a command
# --------------------------------------------------------------------------------------------------
@dataclass
class Outcome:
    code: int
    out: str
    err: str
    value: object = None
    """what a library call returned"""


def run_picollm(ws: Path, argv: list[str]) -> Outcome:
    """`picollm ARGV` in this process, in the folder ws, as `python -m picollm` runs it (run_cli: a user mistake
    is one `error:` line and exit 2)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.chdir(ws), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            run_cli(picollm_main, argv)
        except SystemExit as e:
            return Outcome(e.code or 0, out.getvalue(), err.getvalue())
    raise AssertionError("run_cli returned without exiting")


def run_script(ws: Path, script: str, args: list[str]) -> Outcome:
    """One of the repository's scripts (analyze_all_checkpoints.py, ...) in a subprocess, in the folder ws."""
    proc = subprocess.run([sys.executable, str(ROOT / script), *args], cwd=ws, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    return Outcome(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def restore_logging():
    """A command run in this process points picollm's log at its folder: put the logger back afterwards."""
    logger = get_logger()
    state = (list(logger.handlers), logger.level, logger.propagate)
    yield
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    for handler in state[0]:
        logger.addHandler(handler)
    logger.setLevel(state[1])
    logger.propagate = state[2]


def digest(root: Path) -> dict[str, str]:
    """Every file under root (relative path) with the sha256 of its content."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}
