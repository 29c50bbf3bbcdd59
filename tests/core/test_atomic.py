"""The one atomic write: a write either replaces the file whole or leaves the old one, and a full disk is one
line naming the file."""

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from picollm.core.atomic import atomic_torch_save, atomic_write_text, is_disk_full
from picollm.core.errors import DiskFullError

ROOT = Path(__file__).resolve().parents[2]


def failing_fsync(monkeypatch, error: int = errno.ENOSPC) -> None:
    def fsync(fd: int) -> None:
        raise OSError(error, os.strerror(error))

    monkeypatch.setattr(os, "fsync", fsync)


@pytest.mark.parametrize("error", [errno.ENOSPC, errno.EDQUOT])
def test_a_full_disk_is_one_line_naming_the_file_and_the_old_file_stays(tmp_path, monkeypatch, error):
    path = tmp_path / "status.json"
    atomic_write_text(path, "old")
    failing_fsync(monkeypatch, error)
    with pytest.raises(DiskFullError) as err:
        atomic_write_text(path, "new")
    assert len(str(err.value).splitlines()) == 1 and str(path) in str(err.value)
    assert "free space and run the same command again" in str(err.value)
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["status.json"]


def test_other_write_errors_are_not_called_a_full_disk(tmp_path, monkeypatch):
    failing_fsync(monkeypatch, errno.EIO)
    with pytest.raises(OSError) as err:
        atomic_write_text(tmp_path / "x.txt", "text")
    assert not isinstance(err.value, DiskFullError) and err.value.errno == errno.EIO


def test_a_full_disk_under_torch_saves_runtime_error_is_recognised():
    error = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")
    error.__context__ = OSError(errno.ENOSPC, "No space left on device")  # how torch.save reports a full disk
    assert is_disk_full(error) and not is_disk_full(RuntimeError("unexpected pos"))


def test_a_real_full_disk_while_saving_a_checkpoint(small_disk):
    with pytest.raises(DiskFullError) as err:
        atomic_torch_save({"model": torch.zeros(200_000)}, small_disk / "last.pt")
    assert "last.pt" in str(err.value) and list(small_disk.iterdir()) == []


def test_training_onto_a_full_disk_is_one_error_line(small_disk, corpus):
    cmd = [sys.executable, "-m", "picollm", "train", "--models", "lstm", "--corpus", corpus, "--embed", "64",
           "--hidden", "256", "--layers", "1", "--block_size", "16", "--batch_size", "4", "--max_steps", "4",
           "--eval_interval", "2", "--eval_tokens", "256", "--no-progress", "--out_dir", str(small_disk / "ck")]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=small_disk, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: disk full writing ") and "free space and run the same command again" in last
    assert not list((small_disk / "ck").rglob("*.tmp"))
