"""The batch's jobs on local worker processes (picollm.core.pool): forked from a forkserver that imported torch
once (or spawned); on the CPU at most one per core. A run whose worker dies (killed, out of memory) fails, the
worker is replaced and the other runs carry on; workers exit when the batch process dies. With CUDA, worker slot
i uses cuda:(i % GPUs), and --runs_per_gpu K starts K workers per GPU.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from picollm.core import resources
from picollm.core.pool import Slot, WorkerPool
from picollm.models import families_initializer
from picollm.sweep.jobs import Job, failed_result, run_job


def run_job_in_slot(fn: Callable[..., dict], payload: tuple, slot: Slot) -> dict[str, Any]:
    """A batch task in a local worker: the run on the slot's GPU (GPU packing) and at its threads, unless the
    config fixes them."""
    cfg_dict, stop_at_step, fresh, trial = payload
    if slot.device and str(cfg_dict.get("device", "")).startswith("cuda"):
        cfg_dict = {**cfg_dict, "device": slot.device}
    if not cfg_dict.get("threads"):
        cfg_dict = {**cfg_dict, "threads": slot.threads}
    return fn(cfg_dict, stop_at_step, fresh, **({"trial": trial} if trial else {}))


class LocalPool:
    """The batch's jobs on picollm.core.pool's worker processes: a run whose worker dies fails, the worker is
    replaced and the other runs carry on. fn(cfg_dict, stop_at_step, fresh[, trial]) trains one job. Each
    worker registers the model families of this process (those registered at run time included)."""

    def __init__(self, workers: int, threads: int, devices: list[str] | None = None,
                 log_path: Path | None = None, fn: Callable[..., dict] = run_job,
                 job: resources.Registration | None = None) -> None:
        self.pool = WorkerPool(workers, functools.partial(run_job_in_slot, fn), failed_result, threads, devices,
                               str(log_path) if log_path else None, job, preload=("picollm.train.loop",),
                               initializer=families_initializer())

    def run(self, jobs: list[Job]) -> Iterator[tuple[Job, dict]]:
        """Yield (job, result) as each job finishes; jobs may grow while the results are consumed."""
        return self.pool.run(jobs, lambda j: (j.cfg.to_dict(), j.stop_at_step, j.fresh, j.trial))

    def close(self) -> None:
        self.pool.close()
