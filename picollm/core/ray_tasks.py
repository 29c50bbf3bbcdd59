"""Ray for the stages that run on a cluster (the batch, the analysis): joining a cluster (--address HOST:PORT) or
starting a local Ray, with one-line errors, and tasks run there under the rule of picollm.core.pool's local
workers: a task whose worker dies (killed, out of memory, its node lost) is retried once by Ray, then fails
alone, and the other tasks carry on.

Ray is imported only when a backend asks for it (it is an optional extra: `pip install -e .[ray]`); this
module imports neither Ray nor torch, so commands can check their flags with it.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import tempfile
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from picollm.core.errors import ConfigError
from picollm.core.log import capture_records, replay_records

T = TypeVar("T")

BACKENDS = ("local", "ray")
#: the environment a task needs to find what this process finds (corpora, caches, moved corpus files)
SHARED_ENV = ("PICOLLM_DATA_DIR", "PICOLLM_CACHE_DIR", "PICOLLM_CORPUS_PATH")
#: how to give this machine a Ray cluster's token
RAY_TOKEN_FIX = ("copy the cluster's token (`ray get-auth-token` on the head node) into ~/.ray/auth_token here "
                 "(or RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH)")


def check_backend(backend: str, address: str | None) -> None:
    """A backend this code knows, and --address only with Ray."""
    if backend not in BACKENDS:
        raise ConfigError(f"--backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
    if address and backend != "ray":
        raise ConfigError("--address joins a Ray cluster: add --backend ray")


def import_ray():
    try:
        import ray
    except ImportError:
        raise ConfigError("--backend ray needs Ray: pip install -e .[ray]") from None
    return ray


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


def _listening(address: str, timeout: float = 10.0) -> None:
    """OSError when nothing listens at HOST:PORT: Ray itself would try to connect for ever. Other forms of
    address ("auto", "ray://...") are Ray's to check."""
    host, _, port = address.rpartition(":")
    if host and port.isdigit() and "://" not in host:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass


@contextlib.contextmanager
def ray_session(address: str | None, local_cpus: int | None) -> Iterator[Any]:
    """Ray, joined at `address` or started here with local_cpus CPUs, for the block (yields the ray module).

    A Ray this process already runs (a test's, a notebook's) is used as it is and left running; one this
    block joined or started is shut down after it. A cluster this machine cannot join is one ConfigError.
    """
    ray = import_ray()
    owned = not ray.is_initialized()
    if owned:
        env = {k: os.environ[k] for k in SHARED_ENV if k in os.environ}
        try:
            if address:
                _listening(address)
            with _stderr_held() if address else contextlib.nullcontext():
                ray.init(address=address, num_cpus=None if address else local_cpus, include_dashboard=False,
                         runtime_env={"env_vars": env} if env else None, log_to_driver=False)
        except (OSError, RuntimeError, ray.exceptions.RayError) as e:  # OSError: nothing listens there
            raise ray_init_error(address, e) from None
    try:
        yield ray
    finally:
        if owned:
            ray.shutdown()


def _run_logged(fn: Callable[[Any], Any], payload: Any,
                initializer: Callable[[], Any] | None) -> tuple[Any, list, str]:
    """A task's body: (fn(payload), its log records, this host). A task's logging stays in its own process,
    possibly on another node, so the records go back to be replayed into the caller's log files."""
    if initializer is not None:
        initializer()
    with capture_records() as records:
        result = fn(payload)
    return result, records, socket.gethostname()


class RayTasks(Generic[T]):
    """fn(payload) as a Ray task of num_cpus CPUs (and num_gpus GPUs) per task, on the Ray this process has
    joined (ray_session). fn and initializer go with every task and must be picklable (a module-level
    function, or a partial of one); initializer() runs in the task first (a batch's model families).
    on_death(reason) is the result of a task whose worker died twice (Ray retries it once)."""

    def __init__(self, fn: Callable[[Any], Any], on_death: Callable[[str], Any], num_cpus: float,
                 num_gpus: float = 0.0, initializer: Callable[[], Any] | None = None) -> None:
        self.ray = import_ray()
        self.fn, self.on_death, self.initializer = fn, on_death, initializer
        self.task = self.ray.remote(num_cpus=num_cpus, num_gpus=num_gpus, max_retries=1)(_run_logged)

    def run(self, tasks: list[T], payload: Callable[[T], Any] = lambda task: task,
            limit: int | None = None) -> Iterator[tuple[T, Any]]:
        """Yield (task, result) as each task finishes, with at most `limit` in flight (None: all of them, and
        Ray runs as many at once as the cluster has CPUs for). `tasks` may grow while the results are consumed.
        Each task's log records are replayed into this process's log files, prefixed with its host."""
        pending: dict[Any, T] = {}
        sent = 0
        while True:
            while sent < len(tasks) and (limit is None or len(pending) < limit):
                pending[self.task.remote(self.fn, payload(tasks[sent]), self.initializer)] = tasks[sent]
                sent += 1
            if not pending:
                return
            ready, _ = self.ray.wait(list(pending), num_returns=1)
            task = pending.pop(ready[0])
            try:
                result, records, host = self.ray.get(ready[0])
            except Exception as e:  # the task's worker died, the node was lost, ...
                reason = f"Ray task failed: {e.__class__.__name__}: {' '.join(str(e).split())[:200]}"
                result, records, host = self.on_death(reason), [], "?"
            replay_records(records, f"[ray {host}] ")
            yield task, result
