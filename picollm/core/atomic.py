"""The one atomic write: every file picollm writes goes through it.

A temp file in the same directory is written, fsynced and renamed over the target, so a process killed at any
instant leaves either the old or the new version of a file, never half of one. Light to import (no torch).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path: Path, write: Callable[[Any], None], mode: str = "wb") -> None:
    """Call write(file) on a temp file beside `path`, fsync, then rename it over `path`."""
    path = Path(path)
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
