"""What a batch hands its workers and what comes back: a Job (one config in one stage), run_job (trains it in a
worker process or a Ray task, and never raises: errors come back as 'failed'), its Outcome, and the BatchReport.

A worker process is not the batch's process: a model family registered at run time (register_family) exists
only where it was registered, so the batch sends its families along (picollm.models.families_initializer) with
every worker and every Ray task.
"""

from __future__ import annotations

import math
import os
import shutil
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from picollm.config import RunConfig
from picollm.core.errors import PicoError
from picollm.core.log import get_logger
from picollm.core.text import format_table
from picollm.runs.layout import mark_stopped_training, read_status
from picollm.sweep.tuning import pruning_callback

log = get_logger()

OUTCOMES = ("done", "skipped", "failed", "diverged", "stopped", "paused")


@dataclass
class Job:
    cfg: RunConfig
    stop_at_step: int | None = None
    """pause the run at this step (a halving rung); None trains it to the end"""
    stage: str = "train"
    fresh: bool = False
    """retrain from scratch (--no-skip_existing): an existing run directory is moved aside first"""
    trial: dict[str, Any] | None = None
    """the Optuna trial the run reports its evaluations to, for pruning (picollm.sweep.tuning.pruning_callback)"""
    handle: Any = None
    """the sampler's own handle on this job (its Optuna trial, ...), which its tell() gets back"""


@dataclass
class Outcome:
    """What happened to one config in one stage of the batch."""

    run: str
    fingerprint: str
    run_dir: str
    stage: str
    outcome: str
    """done, skipped (finished before this batch), failed, diverged, stopped, paused, or planned (dry run)"""
    reason: str = ""
    seconds: float = 0.0
    step: int | None = None
    val_loss: float | None = None


@dataclass
class BatchReport:
    outcomes: list[Outcome] = field(default_factory=list)
    """the last outcome of every config, in sampling order (then the continued best run)"""
    manifest_path: Path | None = None
    log_path: Path | None = None

    @property
    def exit_code(self) -> int:
        """1 if any run failed, else 0."""
        return 1 if any(o.outcome == "failed" for o in self.outcomes) else 0

    def counts(self) -> dict[str, int]:
        counts = {k: 0 for k in OUTCOMES}
        for o in self.outcomes:
            counts[o.outcome] = counts.get(o.outcome, 0) + 1
        return counts

    def table(self) -> str:
        rows = [[o.run, o.stage, o.outcome, format_cell(o.val_loss, "{:.4f}"), format_cell(o.step, "{}"),
                 format_cell(o.seconds or None, "{:.1f}"), o.reason[:100]] for o in self.outcomes]
        table = format_table(["run", "stage", "outcome", "val loss", "step", "seconds", "reason"], rows)
        counts = "  ".join(f"{k} {v}" for k, v in self.counts().items() if v or k in ("done", "skipped", "failed"))
        return f"{table}\n{counts}"


def format_cell(value: Any, form: str) -> str:
    """value in `form`, or '-' for a missing value."""
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else form.format(value)


# --------------------------------------------------------------------------------------------------
# in the worker
# --------------------------------------------------------------------------------------------------
def run_job(cfg_dict: dict[str, Any], stop_at_step: int | None = None, fresh: bool = False,
            trial: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train one config (in a worker process or a Ray task); never raises: errors come back as 'failed'.

    fresh: move an existing run directory aside, retrain, and delete the old one only once the new one has
    trained without failing (a failed retrain keeps it, and says where). trial: report every evaluation to
    this Optuna trial, and stop the run (status 'stopped') when its pruner says so.
    """
    from picollm.train.loop import train_run  # imported here: the parent process never needs the trainer

    start = time.perf_counter()
    old = None
    try:
        cfg = RunConfig.from_dict(cfg_dict)
        run_dir = Path(cfg.out_dir) / cfg.run_name()
        if fresh and run_dir.exists():
            old = move_aside(run_dir)
        on_evaluation = pruning_callback(trial) if trial else None
        train_run(cfg, stop_at_step=stop_at_step, on_evaluation=on_evaluation)
        status = read_status(run_dir)
        result = {"status": status["status"], "reason": status.get("reason", "")}
    except PicoError as e:
        result = {"status": "failed", "reason": str(e)}
    except Exception as e:
        log.error(traceback.format_exc())
        result = {"status": "failed", "reason": f"{e.__class__.__name__}: {' '.join(str(e).split())}"}
    if old is not None and result["status"] == "failed":
        result["reason"] += f" (the previous run is kept in {old})"
    elif old is not None:
        shutil.rmtree(old, ignore_errors=True)
    result["seconds"] = time.perf_counter() - start
    return result


def failed_result(reason: str) -> dict[str, Any]:
    return {"status": "failed", "seconds": 0.0, "reason": reason}


# --------------------------------------------------------------------------------------------------
# run directories
# --------------------------------------------------------------------------------------------------
def mark_dead_run(run_dir: Path, reason: str) -> None:
    """status.json of a run whose worker died says 'failed' and why, not 'running' (the next batch resumes it)."""
    mark_stopped_training(run_dir, "failed", reason)


def move_aside(run_dir: Path) -> Path:
    """Rename a run directory to <out_dir>/.replaced/<name>-<time>-<pid> (atomic on one filesystem)."""
    aside = run_dir.parent / ".replaced" / f"{run_dir.name}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    aside.parent.mkdir(parents=True, exist_ok=True)
    os.replace(run_dir, aside)
    return aside
