"""The one atomic write: every file picollm writes goes through it.

A temp file in the same directory is written, fsynced and renamed over the target, so a process killed at any
instant leaves either the old or the new version of a file, never half of one. Light to import (no torch).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from picollm.core.errors import DiskFullError

_UMASK = os.umask(0)
os.umask(_UMASK)


#: the errors of a full disk or a spent quota
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def is_disk_full(error: BaseException | None) -> bool:
    """Whether error, or one it was raised from, is a full disk (torch.save reports one as a RuntimeError
    whose context is the OSError)."""
    for _ in range(8):  # a chain is short; the bound only guards against a cycle
        if error is None:
            return False
        if isinstance(error, OSError) and error.errno in DISK_FULL_ERRNOS:
            return True
        error = error.__cause__ or error.__context__
    return False


def disk_full_error(path: Path | str) -> DiskFullError:
    return DiskFullError(f"disk full writing {path}: free space and run the same command again (what was "
                         "written before is intact)")


def atomic_write(path: Path, write: Callable[[Any], None], mode: str = "wb") -> None:
    """Call write(file) on a temp file beside `path`, fsync, then rename it over `path`. A full disk is a
    one-line DiskFullError naming the file; the old file, if any, is left as it was."""
    try:
        _write_and_replace(Path(path), write, mode)
    except Exception as e:
        if is_disk_full(e):
            raise disk_full_error(path) from None
        raise


def _write_and_replace(path: Path, write: Callable[[Any], None], mode: str) -> None:
    created = [d for d in (path.parent, *path.parent.parents) if not d.exists()]  # deepest first
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; outputs should be as readable as any other
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        for d in created:  # a failed write leaves the disk as it found it (a failed download: no empty cache dir)
            with contextlib.suppress(OSError):  # another writer may have filled it meanwhile
                d.rmdir()
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text), mode="w")


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, allow_nan=True) + "\n")


def atomic_torch_save(obj: Any, path: Path) -> None:
    import torch  # optional here: the table, the corpora and the study write files without torch

    atomic_write(path, lambda f: torch.save(obj, f))
