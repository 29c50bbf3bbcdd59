"""A batch's lock and its manifest.

Each batch holds a lock on <out_dir>/.batch.lock (two batches never train the same run at once) and keeps
logs/<timestamp>-batch.json current after every run: its settings, and for every config its fingerprint, run
directory, resolved config, latest outcome and the history of its stages (plus the halving rankings).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from picollm.config import RunConfig
from picollm.core.atomic import atomic_write_json
from picollm.core.errors import ConfigError, PicoError
from picollm.runs.layout import run_summary
from picollm.sweep.jobs import BatchReport, Outcome


def batch_lock(out_dir: Path) -> FileLock:
    """An exclusive lock on <out_dir>/.batch.lock, held until released or the process exits (the OS drops
    it on kill), so two batches never train the same run at once."""
    out_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(out_dir / ".batch.lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise ConfigError(f"another batch is training in {out_dir}; wait for it or use another --out_dir") from None
    return lock


def manifest_path(log_path: Path) -> Path:
    """The manifest beside the batch's log: logs/<timestamp>-batch.json."""
    path = log_path.with_suffix(".json")
    n = 2
    while path.exists():  # two batches started in the same second
        path = log_path.with_name(f"{log_path.stem}-{n}.json")
        n += 1
    return path


class Manifest:
    """The batch's record of its runs: every config it registers, in order, and the latest outcome of each,
    written to `path` after every change (a batch killed at any moment leaves it as it stood)."""

    def __init__(self, out_dir: Path, path: Path, header: dict[str, Any]) -> None:
        self.out_dir, self.path, self.header = out_dir, path, header
        self.entries: dict[str, dict] = {}  # run name -> manifest entry
        self.configs: dict[str, RunConfig] = {}  # run name -> its config, as trained
        self.last: dict[str, Outcome] = {}  # run name -> its latest outcome
        self.rankings: list[dict] = []
        """rankings a sampler made between its stages (successive halving's rungs: the manifest's "halving")"""

    def register(self, cfg: RunConfig, stage: str) -> None:
        name = cfg.run_name()
        self.configs.setdefault(name, cfg)
        self.entries.setdefault(name, {"run": name, "fingerprint": cfg.fingerprint(), "run_dir": str(self.out_dir / name),
                                       "config": cfg.resolved().to_dict(), "stage": stage, "outcome": "pending",
                                       "history": []})

    def write(self, finished: bool = False) -> None:
        report = BatchReport(outcomes=self.outcomes())
        record = {**self.header, "finished": time.strftime("%Y-%m-%dT%H:%M:%S") if finished else None,
                  "counts": report.counts(), "halving": self.rankings, "runs": list(self.entries.values())}
        atomic_write_json(self.path, record)

    def outcomes(self) -> list[Outcome]:
        """The latest outcome of every config, in the order the configs were registered."""
        return [self.last[name] for name in self.entries if name in self.last]

    def record(self, cfg: RunConfig, stage: str, outcome: str, reason: str, seconds: float) -> Outcome:
        run_dir = self.out_dir / cfg.run_name()
        summary = _summary(run_dir)
        o = Outcome(run=cfg.run_name(), fingerprint=cfg.fingerprint(), run_dir=str(run_dir), stage=stage,
                    outcome=outcome, reason=reason, seconds=round(seconds, 3), step=summary.get("step"),
                    val_loss=summary.get("val_loss"))
        entry = self.entries[o.run]
        entry.update(stage=stage, outcome=outcome, reason=reason, step=o.step, val_loss=o.val_loss)
        entry["history"].append({"stage": stage, "outcome": outcome, "seconds": o.seconds, "step": o.step,
                                 "finished": time.strftime("%Y-%m-%dT%H:%M:%S")})
        self.last[o.run] = o
        self.write()
        return o


def _summary(run_dir: Path) -> dict[str, Any]:
    try:
        return run_summary(run_dir)
    except PicoError:  # the run never got as far as writing its config
        return {}
