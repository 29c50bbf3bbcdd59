"""The batch's jobs as Ray tasks (num_cpus=threads, num_gpus=--gpus_per_run), on a local Ray or on a cluster
(--address HOST:PORT; --out_dir must then be a filesystem every node shares, and every node needs picollm
installed; see the README's "Ray cluster"). Each run's log lines come back into the batch log when its task
ends. The batch's model families go with every task (a family module must be importable on the nodes).
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from typing import Any

from picollm.core.errors import ConfigError
from picollm.core.log import replay_records
from picollm.models import FAMILIES
from picollm.sweep.jobs import Job, run_job_logged


def import_ray():
    try:
        import ray
    except ImportError:
        raise ConfigError("--backend ray needs Ray: pip install -e .[ray]") from None
    return ray


#: how to give this machine a Ray cluster's token
RAY_TOKEN_FIX = ("copy the cluster's token (`ray get-auth-token` on the head node) into ~/.ray/auth_token here "
                 "(or RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH)")


def ray_init_error(address: str | None, e: BaseException) -> ConfigError:
    """The one-line error for a failed ray.init: Ray puts the real cause (a token the cluster refused, ...)
    in the exception's cause or in warnings above it, not in its own message."""
    chain, cause = [], e
    while cause is not None and len(chain) < 5:
        chain.append(f"{cause.__class__.__name__}: {cause}")
        cause = cause.__cause__ or cause.__context__
    text = " ".join(" ".join(chain).split())
    token_mode = os.environ.get("RAY_AUTH_MODE", "").lower() == "token"
    where = f"the Ray cluster at {address}" if address else "the local Ray instance"
    if "AuthenticationError" in text or "InvalidAuthToken" in text or "Unauthenticated" in text:
        if not token_mode:
            return ConfigError(f"{where} uses token authentication and this machine sent no token: {RAY_TOKEN_FIX} "
                               "and set RAY_AUTH_MODE=token, or start the cluster with RAY_AUTH_MODE=disabled "
                               "on a trusted network")
        if "no authentication token was found" in text:
            return ConfigError(f"RAY_AUTH_MODE=token but this machine has no Ray token: {RAY_TOKEN_FIX}")
        return ConfigError(f"{where} refused this machine's Ray token: {RAY_TOKEN_FIX} (the one of this cluster)")
    first = " ".join(str(e).split()) or e.__class__.__name__
    return ConfigError(f"cannot reach {where}: {first}; check that `ray start --head --port PORT` runs there "
                       "and that this machine can reach the port (see the README's \"Ray cluster\")")


@contextlib.contextmanager
def _stderr_held() -> Iterator[None]:
    """Hold back what is written to fd 2 while the block runs, and let it through only if the block succeeds.

    Ray's core prints a warning on fd 2 for every retry of a connection it will not get (20 of them for a
    refused token); the one-line error names the cause instead. Only for joining a cluster: a local Ray's
    processes would inherit the held fd.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        ok = False
        try:
            yield
            ok = True
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            if ok:
                held.seek(0)
                sys.stderr.write(held.read().decode(errors="replace"))
                sys.stderr.flush()


class RayPool:
    """Each job is a Ray task running run_job with num_cpus=threads and num_gpus=gpus_per_run."""

    def __init__(self, threads: int, gpus_per_run: float, address: str | None, local_cpus: int) -> None:
        ray = self.ray = import_ray()
        self.owns_ray = not ray.is_initialized()
        if self.owns_ray:
            env = {k: os.environ[k] for k in ("PICOLLM_DATA_DIR", "PICOLLM_CACHE_DIR") if k in os.environ}
            try:
                with _stderr_held() if address else contextlib.nullcontext():
                    ray.init(address=address, num_cpus=None if address else local_cpus, include_dashboard=False,
                             runtime_env={"env_vars": env} if env else None, log_to_driver=False)
            except (ConnectionError, RuntimeError, ray.exceptions.RayError) as e:
                raise ray_init_error(address, e) from None
        self.task = ray.remote(num_cpus=threads, num_gpus=gpus_per_run, max_retries=1)(run_job_logged)
        self.families = tuple(FAMILIES.values())

    def run(self, jobs: list[Job]) -> Iterator[tuple[Job, dict]]:
        """As LocalPool.run (jobs may grow while the results are consumed)."""
        pending: dict[Any, Job] = {}
        sent = 0
        while True:
            for job in jobs[sent:]:
                ref = self.task.remote(job.cfg.to_dict(), job.stop_at_step, job.fresh, job.trial, self.families)
                pending[ref] = job
            sent = len(jobs)
            if not pending:
                return
            ready, _ = self.ray.wait(list(pending), num_returns=1)
            job = pending.pop(ready[0])
            try:
                result = self.ray.get(ready[0])
            except Exception as e:  # the task's worker died, the node was lost, ...
                result = {"status": "failed", "seconds": 0.0,
                          "reason": f"Ray task failed: {e.__class__.__name__}: {' '.join(str(e).split())[:200]}"}
            replay_records(result.pop("log", []), f"[ray {result.pop('host', '?')}] ")
            yield job, result

    def close(self) -> None:
        if self.owns_ray:
            self.ray.shutdown()
