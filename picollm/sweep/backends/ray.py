"""The batch's jobs as Ray tasks (num_cpus=threads, num_gpus=--gpus_per_run), on a local Ray or on a cluster
(--address HOST:PORT; --out_dir must then be a filesystem every node shares, and every node needs picollm
installed; see the README's "Ray cluster"). Each run's log lines come back into the batch log when its task
ends. The batch's model families go with every task (a family module must be importable on the nodes).
Joining Ray and running tasks there is picollm.core.ray_tasks's, which the analysis shares.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from picollm.core.ray_tasks import RayTasks, ray_session
from picollm.models import families_initializer
from picollm.sweep.jobs import Job, failed_result, run_job


def run_job_task(payload: tuple) -> dict[str, Any]:
    """A batch task on Ray: run_job(cfg_dict, stop_at_step, fresh[, trial])."""
    cfg_dict, stop_at_step, fresh, trial = payload
    return run_job(cfg_dict, stop_at_step, fresh, trial)


class RayPool:
    """Each job is a Ray task running run_job with num_cpus=threads and num_gpus=gpus_per_run."""

    def __init__(self, threads: int, gpus_per_run: float, address: str | None, local_cpus: int) -> None:
        self.session = contextlib.ExitStack()
        self.session.enter_context(ray_session(address, local_cpus))
        self.tasks = RayTasks(run_job_task, failed_result, threads, gpus_per_run, families_initializer())

    def run(self, jobs: list[Job]) -> Iterator[tuple[Job, dict]]:
        """As LocalPool.run (jobs may grow while the results are consumed)."""
        return self.tasks.run(jobs, lambda job: (job.cfg.to_dict(), job.stop_at_step, job.fresh, job.trial))

    def close(self) -> None:
        self.session.close()
