"""Train many configs: local worker processes or Ray tasks, GPU packing, successive halving, the manifest.

    report = train_batch(preset="fast", workers=2)            # or space="my_space.yaml"; see train_batch
    report.exit_code, report.outcomes, report.manifest_path

Scripts call add_batch_args(parser) and train_batch_from_args(args) (= train_batch(**batch_kwargs(args))).

Every config goes through train_run, which is idempotent: a finished run (done / stopped / diverged) is
skipped, an interrupted one resumes from last.pt. So a batch killed at any moment (SIGKILL included) is
finished by running the same command again, with the same metrics as if it had never stopped.
--no-skip_existing retrains: just before a run starts, its old directory is renamed to
<out_dir>/.replaced/, and deleted once the new run has trained without failing.

- local backend: `workers` processes (forked from a forkserver that imported torch once, or spawned; on
  the CPU at most one per core). Each run gets cores // (this batch's workers + the busy processes of the
  other picollm jobs running on this machine) torch threads, sized when it starts (picollm/resources.py),
  unless --threads is given. A worker that dies (killed, out of memory) fails only the run it was
  training, whose status.json then says so, and is replaced; workers exit when the batch process dies.
  With CUDA, worker slot i uses cuda:(i % GPUs), and --runs_per_gpu K starts K workers per GPU.
- ray backend: the same train_run as Ray tasks (num_cpus=threads, num_gpus=--gpus_per_run), on a local
  Ray or on a cluster (--address HOST:PORT; --out_dir must then be a filesystem every node shares, and
  every node needs picollm installed; see the README's "Ray cluster"). Each run's log lines come back into
  the batch log when its task ends.
- halving sampler: successive halving over the sampled configs (rungs from search.halving_schedule);
  eliminated runs are marked 'stopped' with their rank and keep their metrics.
- --continue_best N: the best finished run (lowest val loss) trains N more epochs from its best.pt, as a
  new run whose config names it as `parent`.

Each batch holds a lock on <out_dir>/.batch.lock (two batches never train the same run at once), logs to
logs/<timestamp>-batch.log, and keeps logs/<timestamp>-batch.json (configs, fingerprints, run dirs,
outcomes, timings, halving rankings) current after every run.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import math
import os
import shutil
import socket
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout
from tqdm import tqdm

from picollm.config import RunConfig, add_config_args, config_overrides
from picollm.core import resources
from picollm.core.atomic import atomic_write_json
from picollm.core.errors import ConfigError, PicoError
from picollm.core.log import capture_records, get_logger, replay_records, setup_logging
from picollm.core.pool import Slot, WorkerPool
from picollm.core.settings import add_settings_args, setting, settings_from_args, validate_settings
from picollm.runs.layout import (
    FINISHED,
    read_metrics,
    read_status,
    remove_leftovers,
    run_summary,
    write_status,
)
from picollm.sweep.estimate import batch_seconds, format_duration, run_seconds, seconds_per_step
from picollm.sweep.space import (
    OPTUNA_SAMPLERS,
    PRESETS,
    SAMPLERS,
    Space,
    halving_schedule,
    load_space,
    rung_budget,
    sample,
)
from picollm.sweep.tuning import (
    OBJECTIVES,
    PRUNERS,
    StudyRunner,
    check_settings,
    open_study,
    parse_objectives,
)

log = get_logger()

#: RunConfig fields that the batch sets itself, or whose flag name the batch uses for something else
BATCH_OWNED = ("seed", "max_steps", "out_dir", "device", "parent", "progress")
OUTCOMES = ("done", "skipped", "failed", "diverged", "stopped", "paused")


# --------------------------------------------------------------------------------------------------
# arguments
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BatchSettings:
    """How a batch samples and trains a space: train_batch's keywords and batch_train.py's flags."""

    preset: str | None = setting(None, f"named search space: {', '.join(PRESETS)} (default: pico)", kind=str)
    space: str | None = setting(None, "search space file (.yaml / .json; format: picollm/search.py)", kind=str)
    sampler: str | None = setting(None, "how configs are drawn (default: the space's own)", choices=SAMPLERS, kind=str)
    n_runs: int | None = setting(None, "configs to draw (random / halving; grid: the first n)", bounds="[1, inf)",
                                 kind=int)
    seed: int = setting(0, "sampler seed (the runs' own seed is a run setting)", bounds="[0, 4294967295]")
    workers: int | None = setting(None, "parallel runs (default: one per core, or --runs_per_gpu per GPU; at "
                                  "most one per core on the CPU)", bounds="[1, inf)", kind=int)
    max_steps: int | None = setting(None, "cap every config's step budget (a quick batch)", bounds="[1, inf)",
                                    kind=int)
    skip_existing: bool = setting(True, "skip finished runs (--no-skip_existing retrains them; the old run is "
                                  "kept until the new one has run)")
    continue_best: float | None = setting(None, "then train the best finished run for this many more epochs "
                                          "(default: the space's)", bounds="[0, inf)", kind=float)
    eta: int | None = setting(None, "halving: keep the best 1/eta at every rung (default: the space's, 3)",
                              bounds="[2, inf)", kind=int)
    device: str | None = setting(None, "cpu, cuda, cuda:N or mps for every run (default: the space's, cpu)",
                                 kind=str)
    dry_run: bool = setting(False, "print the configs, their step budgets and which are done; train nothing")
    estimate: int = setting(0, "dry run: time this many training steps of every config and estimate the "
                            "batch's wall time (0 = off)", bounds="[0, inf)")
    out_dir: str = setting("checkpoints", "root directory of run directories")
    log_dir: str = setting("logs", "where the batch log and manifest go")
    backend: str = setting("local", "local processes or Ray tasks", choices=("local", "ray"))
    address: str | None = setting(None, "Ray cluster HOST:PORT to join (--backend ray; default: a local Ray)",
                                  kind=str)
    gpus_per_run: float | None = setting(None, "Ray: GPUs reserved per run, e.g. 0.25 packs 4 per GPU",
                                         bounds="(0, inf)", kind=float)
    runs_per_gpu: int | None = setting(None, "runs that share each GPU (local: K workers per GPU; Ray: 1/K GPU)",
                                       bounds="[1, inf)", kind=int)
    pruner: str = setting("none", "Optuna samplers: stop runs early from their validation curves", choices=PRUNERS)
    objectives: str = setting("val_loss", f"Optuna samplers: what to minimise, a comma list of {', '.join(OBJECTIVES)} "
                              "(two or more: multi-objective, e.g. with --sampler nsga2)")

    def __post_init__(self) -> None:
        validate_settings(self)
        if self.address and self.backend != "ray":
            raise ConfigError("--address joins a Ray cluster: add --backend ray")
        if self.estimate and not self.dry_run:
            raise ConfigError("--estimate times the configs of a dry run: add --dry_run")
        parse_objectives(self.objectives)


def add_batch_args(parser: argparse.ArgumentParser) -> None:
    """The batch flags, then one override flag per RunConfig field (applied on top of every sampled config)."""
    add_settings_args(parser, BatchSettings, group_title="batch")
    add_config_args(parser, exclude=BATCH_OWNED, group_title="run settings (override every sampled config)")


def batch_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """train_batch's keyword arguments from parsed add_batch_args flags."""
    overrides = {k: v for k, v in config_overrides(args).items() if k not in BATCH_OWNED}  # --seed etc. are ours
    return {**settings_from_args(args, BatchSettings), "overrides": overrides}


def train_batch_from_args(args: argparse.Namespace) -> BatchReport:
    return train_batch(**batch_kwargs(args))


# --------------------------------------------------------------------------------------------------
# jobs and outcomes
# --------------------------------------------------------------------------------------------------
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
        rows = [[o.run, o.stage, o.outcome, _fmt(o.val_loss, "{:.4f}"), _fmt(o.step, "{}"),
                 _fmt(o.seconds or None, "{:.1f}"), o.reason[:100]] for o in self.outcomes]
        table = format_table(["run", "stage", "outcome", "val loss", "step", "seconds", "reason"], rows)
        counts = "  ".join(f"{k} {v}" for k, v in self.counts().items() if v or k in ("done", "skipped", "failed"))
        return f"{table}\n{counts}"


def _fmt(value: Any, fmt: str) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else fmt.format(value)


def format_table(header: list[str], rows: list[list[str]]) -> str:
    """Aligned plain-text table."""
    cells = [header] + rows
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


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
        on_evaluation = None
        if trial:
            from picollm.sweep.tuning import pruning_callback

            on_evaluation = pruning_callback(trial)
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


def run_job_logged(cfg_dict: dict[str, Any], stop_at_step: int | None = None, fresh: bool = False,
                   trial: dict[str, Any] | None = None) -> dict[str, Any]:
    """run_job for a Ray task, returning the run's log records under "log" too: a task's logging stays in
    its own process, possibly on another node, so the batch replays them into its log."""
    with capture_records() as records:
        result = run_job(cfg_dict, stop_at_step, fresh, trial)
    return {**result, "log": records, "host": socket.gethostname()}


def mark_dead_run(run_dir: Path, reason: str) -> None:
    """status.json of a run whose worker died says 'failed' and why, not 'running' (the next batch resumes it)."""
    status = read_status(run_dir)
    if status["status"] == "running":
        keep = {k: status[k] for k in ("step", "max_steps", "best_val_loss", "best_step", "train_seconds")
                if k in status}
        write_status(run_dir, "failed", reason, **keep)


def move_aside(run_dir: Path) -> Path:
    """Rename a run directory to <out_dir>/.replaced/<name>-<time>-<pid> (atomic on one filesystem)."""
    aside = run_dir.parent / ".replaced" / f"{run_dir.name}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    aside.parent.mkdir(parents=True, exist_ok=True)
    os.replace(run_dir, aside)
    return aside


# --------------------------------------------------------------------------------------------------
# executors: run jobs, yield (job, result) as each finishes
# --------------------------------------------------------------------------------------------------
def run_job_in_slot(fn: Callable[..., dict], payload: tuple, slot: Slot) -> dict[str, Any]:
    """A batch task in a local worker: the run on the slot's GPU (GPU packing) and at its threads, unless the
    config fixes them."""
    cfg_dict, stop_at_step, fresh, trial = payload
    if slot.device and str(cfg_dict.get("device", "")).startswith("cuda"):
        cfg_dict = {**cfg_dict, "device": slot.device}
    if not cfg_dict.get("threads"):
        cfg_dict = {**cfg_dict, "threads": slot.threads}
    return fn(cfg_dict, stop_at_step, fresh, **({"trial": trial} if trial else {}))


def failed_result(reason: str) -> dict[str, Any]:
    return {"status": "failed", "seconds": 0.0, "reason": reason}


class LocalPool:
    """The batch's jobs on picollm.core.pool's worker processes: a run whose worker dies fails, the worker is
    replaced and the other runs carry on. fn(cfg_dict, stop_at_step, fresh[, trial]) trains one job."""

    def __init__(self, workers: int, threads: int, devices: list[str] | None = None,
                 log_path: Path | None = None, fn: Callable[..., dict] = run_job,
                 job: resources.Registration | None = None) -> None:
        self.pool = WorkerPool(workers, functools.partial(run_job_in_slot, fn), failed_result, threads, devices,
                               str(log_path) if log_path else None, job, preload=("picollm.train.loop",))

    def run(self, jobs: list[Job]) -> Iterator[tuple[Job, dict]]:
        """Yield (job, result) as each job finishes; jobs may grow while the results are consumed."""
        return self.pool.run(jobs, lambda j: (j.cfg.to_dict(), j.stop_at_step, j.fresh, j.trial))

    def close(self) -> None:
        self.pool.close()


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

    def run(self, jobs: list[Job]) -> Iterator[tuple[Job, dict]]:
        """As LocalPool.run (jobs may grow while the results are consumed)."""
        pending: dict[Any, Job] = {}
        sent = 0
        while True:
            for job in jobs[sent:]:
                pending[self.task.remote(job.cfg.to_dict(), job.stop_at_step, job.fresh, job.trial)] = job
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


# --------------------------------------------------------------------------------------------------
# planning: configs, resources
# --------------------------------------------------------------------------------------------------
def total_steps_of(cfg: RunConfig) -> int:
    """The run's full step budget (epochs are converted with the corpus's training split)."""
    if cfg.epochs <= 0:
        return cfg.max_steps
    from picollm.data.batching import prepare_data
    from picollm.train.loop import total_steps

    r = cfg.resolved()
    return total_steps(cfg, len(prepare_data(cfg.corpus, r.tokenizer, r.bpe_vocab_size)[1]["train"]))


def cap_steps(configs: list[RunConfig], cap: int) -> list[RunConfig]:
    """Every config trained for at most `cap` steps (epochs become steps), one per fingerprint."""
    out, seen = [], set()
    for cfg in configs:
        total = total_steps_of(cfg)
        if cfg.epochs > 0 or total > cap:
            cfg = cfg.replace(epochs=0.0, max_steps=min(cap, total))
        if cfg.fingerprint() not in seen:
            seen.add(cfg.fingerprint())
            out.append(cfg)
    return out


@dataclass
class Resources:
    workers: int
    threads: int
    devices: list[str] | None
    """per worker slot (local backend with CUDA); None on CPU"""
    gpus_per_run: float
    notes: list[str] = field(default_factory=list)
    """warnings for the log (flags that do not apply here)"""


def plan_resources(configs: list[RunConfig], backend: str, workers: int | None, runs_per_gpu: int | None,
                   gpus_per_run: float | None, threads: int | None, address: str | None = None) -> Resources:
    """Workers, torch threads per worker (workers x threads <= cores) and GPU slots for this batch.

    Runs on this machine's CPU get at most one worker per core. threads is what the runs would get now,
    beside the other picollm jobs running; local workers size it again as each run starts.
    """
    for name, value in (("workers", workers), ("runs_per_gpu", runs_per_gpu)):
        if value is not None and value < 1:
            raise ConfigError(f"--{name} must be >= 1; got {value}")
    if gpus_per_run is not None and gpus_per_run <= 0:
        raise ConfigError(f"--gpus_per_run must be > 0 (e.g. 0.25); got {gpus_per_run}")
    cores, notes = resources.cpu_cores(), []
    cuda = sorted({c.device for c in configs if c.device.startswith("cuda")})
    devices = None
    if workers and not cuda and (backend == "local" or not address):
        workers, note = resources.cap_workers(workers)
        notes += [note] if note else []
    if backend == "ray":
        if runs_per_gpu and gpus_per_run and abs(gpus_per_run - 1 / runs_per_gpu) > 1e-9:
            raise ConfigError(f"--runs_per_gpu {runs_per_gpu} means --gpus_per_run {1 / runs_per_gpu:g}; give one of them")
        gpus = gpus_per_run or (1 / runs_per_gpu if runs_per_gpu else (1.0 if cuda else 0.0))
        n = workers or min(len(configs), cores)
    else:
        if gpus_per_run is not None:
            notes.append("--gpus_per_run ignored: it is for --backend ray; locally, pack runs with --runs_per_gpu")
        gpus = 0.0
        if cuda:
            import torch

            if not torch.cuda.is_available():
                raise ConfigError(f"--device {cuda[0]} asked for, but CUDA is not available here; use --device cpu")
            explicit = [d for d in cuda if d != "cuda"]
            devices = explicit or [f"cuda:{i}" for i in range(torch.cuda.device_count())]
            n = workers or (runs_per_gpu or 1) * len(devices)
        else:
            if runs_per_gpu:
                notes.append("--runs_per_gpu ignored: the runs are on the CPU (use --device cuda to pack GPUs)")
            n = workers or min(len(configs), cores)
    n = max(1, min(n, len(configs)))
    per = threads or resources.threads_per_process(n)
    if n * per > cores and backend == "local" and not cuda:
        notes.append(f"{n} workers x {per} threads > {cores} cores: runs will compete for the CPU")
    return Resources(workers=n, threads=per, devices=devices, gpus_per_run=gpus, notes=notes)


# --------------------------------------------------------------------------------------------------
# the batch
# --------------------------------------------------------------------------------------------------
class _BatchRunner:
    """Runs stages of jobs through a pool, records outcomes and keeps the manifest current."""

    def __init__(self, pool, out_dir: Path, manifest_path: Path, header: dict) -> None:
        self.pool, self.out_dir, self.manifest_path, self.header = pool, out_dir, manifest_path, header
        self.entries: dict[str, dict] = {}  # run name -> manifest entry
        self.last: dict[str, Outcome] = {}  # run name -> its latest outcome
        self.halving: list[dict] = []

    def register(self, cfg: RunConfig, stage: str) -> None:
        name = cfg.run_name()
        self.entries.setdefault(name, {"run": name, "fingerprint": cfg.fingerprint(), "run_dir": str(self.out_dir / name),
                                       "config": cfg.resolved().to_dict(), "stage": stage, "outcome": "pending",
                                       "history": []})

    def write_manifest(self, finished: bool = False) -> None:
        report = BatchReport(outcomes=self.outcomes())
        record = {**self.header, "finished": time.strftime("%Y-%m-%dT%H:%M:%S") if finished else None,
                  "counts": report.counts(), "halving": self.halving, "runs": list(self.entries.values())}
        atomic_write_json(self.manifest_path, record)

    def outcomes(self) -> list[Outcome]:
        """The latest outcome of every config, in the order the configs were sampled."""
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
        self.write_manifest()
        return o

    def execute(self, jobs: list[Job]) -> dict[str, Outcome]:
        """Run the jobs whose runs are not finished (or already paused at their step budget) and the fresh
        ones; record every outcome."""
        todo = []
        for job in jobs:
            self.register(job.cfg, job.stage)
            run_dir = self.out_dir / job.cfg.run_name()
            status = read_status(run_dir)
            if job.fresh:
                todo.append(job)
            elif status["status"] in FINISHED:
                self.record(job.cfg, job.stage, "skipped", f"already {status['status']}: {status.get('reason', '')}", 0.0)
            elif (job.stop_at_step and status["status"] == "paused"
                  and status.get("step", 0) >= job.stop_at_step):
                self.record(job.cfg, job.stage, "paused", status.get("reason", ""), 0.0)
            else:
                remove_leftovers(run_dir)
                todo.append(job)
        total = len(todo)
        for i, (job, result) in enumerate(self.pool.run(todo), 1):
            if result["status"] == "failed":  # a worker that died had no chance to write its run's status
                mark_dead_run(self.out_dir / job.cfg.run_name(), result.get("reason", ""))
            o = self.record(job.cfg, job.stage, result["status"], result.get("reason", ""), result.get("seconds", 0.0))
            loss = f" val {o.val_loss:.4f}" if o.val_loss is not None else ""
            log.info(f"[{i}/{total}] {o.run} {job.stage}: {o.outcome}{loss} ({o.seconds:.1f} s) {o.reason}")
        return {j.cfg.run_name(): self.last[j.cfg.run_name()] for j in jobs}


def _summary(run_dir: Path) -> dict[str, Any]:
    try:
        return run_summary(run_dir)
    except PicoError:  # the run never got as far as writing its config
        return {}


def best_val_loss_until(run_dir: Path, step: int) -> float:
    """Lowest validation loss of a run among its evaluations at steps 1..step (inf if none)."""
    if not (Path(run_dir) / "metrics.csv").exists() or read_status(run_dir)["status"] in ("failed", "diverged"):
        return math.inf
    m = read_metrics(run_dir)
    losses = m.loc[(m["step"] > 0) & (m["step"] <= step), "val_loss"].dropna()
    return float(losses.min()) if len(losses) else math.inf


def run_halving(runner: _BatchRunner, configs: list[RunConfig], eta: int, fresh: bool = False) -> None:
    """Successive halving: train every survivor to the rung's budget, keep the best max(1, n // eta).

    A rung's budget is a fraction of each config's own step budget rounded up to an evaluation point, so
    the survivors' metrics equal those of uninterrupted runs. Ranking reads only evaluations up to the
    budget, so a rerun of a killed batch picks the same survivors.
    """
    totals = {c.run_name(): total_steps_of(c) for c in configs}
    alive = list(configs)
    rungs = halving_schedule(len(configs), eta)
    for r, rung in enumerate(rungs, 1):
        last = r == len(rungs)
        budgets = {c.run_name(): rung_budget(rung.fraction, totals[c.run_name()], c.eval_interval) for c in alive}
        stage = f"rung {r}/{len(rungs)}"
        log.info(f"successive halving {stage}: {len(alive)} configs to {rung.fraction:.3g} of their budget")
        runner.execute([Job(c, None if last else budgets[c.run_name()], stage, fresh and r == 1) for c in alive])
        if last:
            break
        losses = {c.run_name(): best_val_loss_until(runner.out_dir / c.run_name(), budgets[c.run_name()]) for c in alive}
        ranked = sorted(alive, key=lambda c: (losses[c.run_name()], c.run_name()))
        runner.halving.append({"rung": r, "fraction": rung.fraction, "kept": rung.n_keep,
                               "ranking": [{"run": c.run_name(), "step": budgets[c.run_name()],
                                            "val_loss": losses[c.run_name()]} for c in ranked]})
        for rank, cfg in enumerate(ranked[rung.n_keep:], rung.n_keep + 1):
            run_dir, name = runner.out_dir / cfg.run_name(), cfg.run_name()
            status = read_status(run_dir)
            if status["status"] in ("paused", "running"):
                reason = (f"stopped by successive halving at step {budgets[name]}: val loss {losses[name]:.4f} "
                          f"ranked {rank} of {len(ranked)}")
                keep = {k: status[k] for k in ("step", "max_steps", "best_val_loss", "best_step", "train_seconds")
                        if k in status}
                write_status(run_dir, "stopped", reason, **keep)
                runner.record(cfg, stage, "stopped", reason, 0.0)
        alive = ranked[: rung.n_keep]
        runner.write_manifest()


def run_continue_best(runner: _BatchRunner, configs: list[RunConfig], epochs: float, cap: int | None) -> None:
    """Train the finished run with the lowest val loss for `epochs` more epochs, from its best.pt."""
    finished = [(o.val_loss, c) for c in configs
                if (o := runner.last.get(c.run_name())) and o.val_loss is not None
                and read_status(runner.out_dir / c.run_name())["status"] == "done"]
    if not finished:
        log.warning("--continue_best: no finished run to continue")
        return
    best_loss, best = min(finished, key=lambda t: (t[0], t[1].run_name()))
    parent = runner.out_dir / best.run_name()
    cfg = best.replace(parent=str(parent), epochs=float(epochs))
    if cap:
        cfg = cap_steps([cfg], cap)[0]
    log.info(f"continuing the best run {best.run_name()} (val loss {best_loss:.4f}) for {epochs:g} epochs "
             f"as {cfg.run_name()}")
    runner.execute([Job(cfg, None, "continue_best")])


def _lock(out_dir: Path) -> FileLock:
    """An exclusive lock on <out_dir>/.batch.lock, held until released or the process exits (the OS drops
    it on kill), so two batches never train the same run at once."""
    out_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(out_dir / ".batch.lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise ConfigError(f"another batch is training in {out_dir}; wait for it or use another --out_dir") from None
    return lock


def _manifest_path(log_path: Path) -> Path:
    path = log_path.with_suffix(".json")
    n = 2
    while path.exists():  # two batches started in the same second
        path = log_path.with_name(f"{log_path.stem}-{n}.json")
        n += 1
    return path


def print_plan(configs: list[RunConfig], out_dir: Path, description: str, estimate_steps: int = 0,
               workers: int = 1, threads: int = 1) -> list[Outcome]:
    """The dry run: a table of the configs (the settings that vary between them), each run's step budget and
    status; with estimate_steps, the measured time of every run still to train and of the whole batch."""
    dicts = [c.fingerprint_dict() for c in configs]
    keys = [k for k in dict.fromkeys(k for d in dicts for k in d) if len({repr(d.get(k)) for d in dicts}) > 1]
    keys = [k for k in keys if k not in ("model", "corpus")]
    rows, outcomes, todo_seconds = [], [], []
    timing = tqdm(total=len(configs), desc=f"timing {estimate_steps} steps of each config",
                  disable=not estimate_steps, leave=False)
    for i, (cfg, d) in enumerate(zip(configs, dicts), 1):
        status = read_status(out_dir / cfg.run_name())["status"]
        steps = total_steps_of(cfg)
        row = [str(i), cfg.run_name(), status, cfg.model] + [_fmt(d.get(k), "{}") for k in keys] + [str(steps)]
        if estimate_steps:
            seconds = estimate_run_seconds(cfg, steps, estimate_steps, threads)
            row.append(format_duration(seconds))
            if status not in FINISHED:
                todo_seconds.append(seconds)
            timing.update(1)
        rows.append(row)
        outcomes.append(Outcome(run=cfg.run_name(), fingerprint=cfg.fingerprint(), run_dir=str(out_dir / cfg.run_name()),
                                stage="dry_run", outcome="skipped" if status in FINISHED else "planned",
                                reason=status))
    timing.close()
    print(description)
    print(format_table(["#", "run", "status", "model"] + keys + ["steps"] + (["time"] if estimate_steps else []),
                       rows))
    n_done = sum(o.outcome == "skipped" for o in outcomes)
    print(f"{len(configs)} configs: {n_done} finished (would be skipped), {len(configs) - n_done} to train "
          f"in {out_dir}/ (dry run: nothing trained)")
    if estimate_steps:
        print(f"estimated wall time: {format_duration(batch_seconds(todo_seconds, workers))} with {workers} "
              f"workers x {threads} threads ({format_duration(sum(todo_seconds))} of run time; timed "
              f"{estimate_steps} steps of each config now, on this machine, as loaded as it is now)")
    return outcomes


def estimate_run_seconds(cfg: RunConfig, steps: int, estimate_steps: int, threads: int) -> float:
    """A run's wall time: its step budget at the measured seconds per step, plus its evaluations."""
    from picollm.data.batching import prepare_data

    r = cfg.resolved()
    valid_tokens = len(prepare_data(cfg.corpus, r.tokenizer, r.bpe_vocab_size)[1]["valid"])
    step_seconds = seconds_per_step(cfg, min(estimate_steps, steps), threads)
    return run_seconds(cfg, steps, step_seconds, valid_tokens)


def run_study(runner: _BatchRunner, study: StudyRunner, n_runs: int, workers: int) -> list[RunConfig]:
    """Ask-and-tell: keep `workers` trials training, tell each result as it comes, until n_runs distinct
    configs have a trial (trials a killed batch left running first). Returns the configs trained."""
    jobs: list[Job] = []
    trials: dict[int, Any] = {}  # id(job) -> its trial

    def add(t) -> None:
        runner.register(t.cfg, f"trial {t.trial.number}")
        remove_leftovers(runner.out_dir / t.cfg.run_name())
        jobs.append(Job(t.cfg, stage=f"trial {t.trial.number}", trial=study.job_info(t)))
        trials[id(jobs[-1])] = t

    def fill(in_flight: int) -> None:
        while in_flight < workers and study.distinct() < n_runs and (t := study.ask()) is not None:
            add(t)
            in_flight += 1

    for t in study.unfinished():
        add(t)
    fill(len(jobs))
    done = 0
    for job, result in runner.pool.run(jobs):
        if result["status"] == "failed":
            mark_dead_run(runner.out_dir / job.cfg.run_name(), result.get("reason", ""))
        o = runner.record(job.cfg, job.stage, result["status"], result.get("reason", ""), result.get("seconds", 0.0))
        study.finish(trials[id(job)])
        done += 1
        loss = f" val {o.val_loss:.4f}" if o.val_loss is not None else ""
        log.info(f"[{study.distinct()}/{n_runs}] {o.run} {job.stage}: {o.outcome}{loss} ({o.seconds:.1f} s) {o.reason}")
        fill(len(jobs) - done)
    return [t.cfg for t in trials.values()]


def _run_stages(runner: _BatchRunner, configs: list[RunConfig], sampler: str, eta: int, fresh: bool,
                epochs_more: float, max_steps: int | None, study: tuple[StudyRunner, int, int] | None) -> None:
    if study:
        configs = run_study(runner, *study)
    else:
        for cfg in configs:
            runner.register(cfg, "planned")
        runner.write_manifest()
        if sampler == "halving":
            run_halving(runner, configs, eta, fresh=fresh)
        else:
            runner.execute([Job(c, fresh=fresh) for c in configs])
    if epochs_more:
        run_continue_best(runner, configs, epochs_more, max_steps)


def _sampled_configs(st: BatchSettings, sp: Space, sampler: str, n_runs: int, out_dir: Path) -> list[RunConfig]:
    """The configs the batch trains (an Optuna sampler picks them as results come in: then a random sample of
    the space stands in for the plan), capped and placed in out_dir; bad sampler settings are errors here."""
    tuned = sampler in OPTUNA_SAMPLERS
    if tuned:
        check_settings(sampler, st.pruner, parse_objectives(st.objectives))
    elif st.pruner != "none" or st.objectives != "val_loss":
        raise ConfigError(f"--pruner and --objectives go with an Optuna sampler ({', '.join(OPTUNA_SAMPLERS)}); "
                          f"the sampler here is {sampler}")
    configs = sample(sp, "random" if tuned else sampler, n_runs if tuned else st.n_runs, st.seed)
    if st.max_steps:
        configs = cap_steps(configs, st.max_steps)
    if sampler == "halving":
        halving_schedule(len(configs), st.eta or sp.eta)  # validates eta
    return [c.replace(out_dir=str(out_dir), progress=False) for c in configs]


def ensure_corpora(configs: list[RunConfig], st: BatchSettings) -> None:
    """Every corpus the batch trains on (or times, --estimate) is here, downloaded once before any worker
    starts, or one DataError. A plain dry run needs none; a Ray cluster's nodes read their own copies."""
    if (st.dry_run and not st.estimate) or (st.backend == "ray" and st.address):
        return
    from picollm.data.corpora import (
        ensure_corpus,  # picollm.data.corpora imports torch, which a dry run never needs
    )

    for corpus in sorted({c.corpus for c in configs}):
        ensure_corpus(corpus)


def train_batch(overrides: dict[str, Any] | None = None, console: bool = True, **settings: Any) -> BatchReport:
    """Sample a space (a preset or a file) and train every config; see the module docstring.

    settings: BatchSettings fields. overrides: RunConfig settings applied to every config (they replace the
    space's values and axes). The report's exit_code is 1 if any run failed; user mistakes raise
    ConfigError before anything trains.
    """
    st = BatchSettings(**{k: str(v) if isinstance(v, Path) else v for k, v in settings.items()})
    backend, address, max_steps = st.backend, st.address, st.max_steps
    if backend == "ray" and not st.dry_run:
        import_ray()  # fail before sampling, not after
    out_dir = Path(st.out_dir)
    fixed = dict(overrides or {})
    if st.device:
        fixed["device"] = st.device
    sp = load_space(st.preset, st.space).with_overrides(fixed)
    sampler, eta = st.sampler or sp.sampler, st.eta or sp.eta
    epochs_more = sp.continue_best if st.continue_best is None else st.continue_best
    tuned = sampler in OPTUNA_SAMPLERS
    n_runs = st.n_runs or sp.n_runs or 16
    configs = _sampled_configs(st, sp, sampler, n_runs, out_dir)
    res = plan_resources(configs, backend, st.workers, st.runs_per_gpu, st.gpus_per_run, fixed.get("threads"),
                         address)
    ensure_corpora(configs, st)
    if st.dry_run:
        for note in res.notes:
            print(f"warning: {note}", file=sys.stderr)
        if tuned:
            print(f"--sampler {sampler} chooses {n_runs} configs as results come in; a random sample of the space:")
        return BatchReport(outcomes=print_plan(configs, out_dir, f"space {sp.name}: {sp.description}".rstrip(": "),
                                               st.estimate, res.workers, res.threads))

    # Ray is joined before anything is written: a cluster this machine cannot join is a user mistake
    pool = RayPool(res.threads, res.gpus_per_run, address, res.workers * res.threads) if backend == "ray" else None
    try:
        lock = _lock(out_dir)
    except ConfigError:
        if pool:
            pool.close()
        raise
    log_path = setup_logging("batch", st.log_dir, console=console)
    for note in res.notes:
        log.warning(note)
    fixed_threads = backend == "ray" or bool(fixed.get("threads"))  # Ray's: the CPUs it reserves per task
    if fixed_threads:
        configs = [c.replace(threads=res.threads) for c in configs]

    def prepare(cfg: RunConfig) -> RunConfig:  # what the batch does to every sampled config, for Optuna's
        cfg = (cap_steps([cfg], max_steps)[0] if max_steps else cfg).replace(out_dir=str(out_dir), progress=False)
        return cfg.replace(threads=res.threads) if fixed_threads else cfg

    study = None
    if tuned:
        study = (open_study(out_dir, sp, sampler, st.seed, st.pruner, parse_objectives(st.objectives), prepare),
                 n_runs, res.workers)
    manifest_path = _manifest_path(log_path)
    header = {"space": sp.name, "description": sp.description, "sampler": sampler, "seed": st.seed,
              "n_runs": n_runs if tuned else len(configs), "pruner": st.pruner, "objectives": st.objectives, "eta": eta if sampler == "halving" else None, "max_steps_cap": max_steps,
              "skip_existing": st.skip_existing, "continue_best": epochs_more, "overrides": fixed, "backend": backend,
              "address": address, "resources": asdict(res), "out_dir": str(out_dir), "log": str(log_path),
              "argv": sys.argv, "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    log.info(f"batch: {len(configs)} configs from space {sp.name} ({sampler}), {res.workers} {backend} workers x "
             f"{res.threads} threads{'' if fixed_threads else ' (sized as each run starts)'}"
             f"{', GPUs ' + ','.join(res.devices) if res.devices else ''}; manifest {manifest_path}")

    # a cluster's tasks run on its nodes: only a batch training here tells other jobs it uses this CPU
    here = backend == "local" or not address
    with resources.registered("batch", res.workers) if here else contextlib.nullcontext() as job:
        pool = pool or LocalPool(res.workers, fixed.get("threads") or 0, res.devices, log_path, job=job)
        runner = _BatchRunner(pool, out_dir, manifest_path, header)
        try:
            _run_stages(runner, configs, sampler, eta, not st.skip_existing, epochs_more, max_steps, study)
        finally:
            pool.close()
            lock.release()
    runner.write_manifest(finished=True)
    report = BatchReport(outcomes=runner.outcomes(), manifest_path=manifest_path, log_path=log_path)
    log.info("\n" + report.table())
    log.info(f"runs in {out_dir}/, manifest {manifest_path}, log {log_path}")
    return report
