"""Runs that moved: a run copied to another folder or node, with its local corpus file beside it, still
analyses, serves and resumes there.

A run trained on a local file records the file's path (config.json), which another machine may not have. Its
fingerprint hashes the file's content, not its path, so the file is found again by its name, in the places a
copy puts it, and recognised by its content: a candidate counts only if the run's fingerprint comes out the
same with it. Registry corpora (tinyshakespeare, ptb, ...) are found as always ($PICOLLM_DATA_DIR, the cache).
"""

from __future__ import annotations

import os
from pathlib import Path

from picollm.config import RunConfig
from picollm.core.errors import DataError
from picollm.data.corpora import CORPORA, data_dir

#: folders (separated by os.pathsep) searched for a moved run's corpus file, after the places beside the run
CORPUS_PATH_ENV = "PICOLLM_CORPUS_PATH"


def _candidates(run_dir: Path, name: str) -> list[Path]:
    """Where a copied corpus file may be: beside the checkpoints folder or in it, in $PICOLLM_CORPUS_PATH,
    in $PICOLLM_DATA_DIR, or in the working directory."""
    folders = [run_dir.parent.parent, run_dir.parent]
    folders += [Path(p) for p in os.environ.get(CORPUS_PATH_ENV, "").split(os.pathsep) if p]
    folders += [data_dir()] if data_dir() else []
    folders.append(Path.cwd())
    return [folder / name for folder in folders]


def locate_corpus(run_dir: Path, cfg: RunConfig, fingerprint: str | None) -> RunConfig:
    """cfg, with its corpus pointing at the file here: its recorded path if that still exists, else the first
    file of the same name whose content gives the run's fingerprint. Unchanged when none is found (reading
    the corpus then fails with require_corpus's message), so a run that needs no corpus (generating from
    it) still loads."""
    recorded = Path(cfg.corpus).expanduser()
    if cfg.corpus in CORPORA or recorded.is_file():
        return cfg
    for candidate in _candidates(Path(run_dir), recorded.name):
        if candidate.is_file():
            moved = cfg.replace(corpus=str(candidate.resolve()))
            if fingerprint is None or moved.fingerprint() == fingerprint:
                return moved
    return cfg


def require_corpus(run_dir: Path, cfg: RunConfig) -> None:
    """A one-line DataError naming the missing corpus file and where to put it, before anything reads it."""
    path = Path(cfg.corpus).expanduser()
    if cfg.corpus in CORPORA or path.is_file():
        return
    raise DataError(f"{Path(run_dir).name} was trained on {path}, which is not here: copy {path.name} (the same "
                    f"file) beside {Path(run_dir).parent}, or name its folder in ${CORPUS_PATH_ENV}")
