"""Train many configs: a sampler chooses them, local worker processes or Ray tasks train them, a manifest records them.

    report = train_batch(preset="fast", workers=2)            # or space="my_space.yaml"; see train_batch
    report.exit_code, report.outcomes, report.manifest_path

Scripts call add_batch_args(parser) and train_batch_from_args(args) (= train_batch(**batch_kwargs(args))).

The batch asks its sampler (picollm.sweep.samplers: grid, random, halving, Optuna's) for jobs, trains them on
its backend (picollm.sweep.backends), and tells the sampler each outcome, until the sampler has nothing more to
ask; then --continue_best N trains the best finished run (lowest val loss) N more epochs from its best.pt, as a
new run whose config names it as `parent`.

Every config goes through train_run, which is idempotent: a finished run (done / stopped / diverged) is
skipped, an interrupted one resumes from last.pt. So a batch killed at any moment (SIGKILL included) is
finished by running the same command again, with the same metrics as if it had never stopped.
--no-skip_existing retrains: just before a run starts, its old directory is renamed to
<out_dir>/.replaced/, and deleted once the new run has trained without failing.

Each batch holds a lock on <out_dir>/.batch.lock (two batches never train the same run at once), logs to
logs/<timestamp>-batch.log, and keeps logs/<timestamp>-batch.json (configs, fingerprints, run dirs,
outcomes, timings, halving rankings) current after every run (picollm.sweep.manifest).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from picollm.config import RunConfig
from picollm.core import resources
from picollm.core.errors import ConfigError
from picollm.core.log import get_logger, setup_logging
from picollm.core.ray_tasks import import_ray
from picollm.data.corpora import ensure_corpus
from picollm.runs.layout import FINISHED, read_status, remove_leftovers
from picollm.sweep.backends.local import LocalPool
from picollm.sweep.backends.ray import RayPool
from picollm.sweep.dry_run import print_plan
from picollm.sweep.jobs import BatchReport, Job, Outcome, mark_dead_run
from picollm.sweep.manifest import Manifest, batch_lock, manifest_path
from picollm.sweep.planning import Placement, Resources, cap_steps, plan_resources
from picollm.sweep.samplers import SAMPLERS, Sampler, SamplerOptions
from picollm.sweep.settings import BatchSettings, batch_kwargs
from picollm.sweep.settings import add_batch_args as add_batch_args  # the scripts' one import
from picollm.sweep.space import Space, load_space

log = get_logger()


def train_batch_from_args(args: argparse.Namespace) -> BatchReport:
    return train_batch(**batch_kwargs(args))


# --------------------------------------------------------------------------------------------------
# ask, train, tell
# --------------------------------------------------------------------------------------------------
class _JobList:
    """The protocol's smallest sampler: these jobs, asked for once (the continued best run)."""

    def __init__(self, jobs: list[Job]) -> None:
        self.jobs: list[Job] | None = jobs

    def ask(self, free: int) -> list[Job] | None:
        jobs, self.jobs = self.jobs, None
        return jobs

    def tell(self, job: Job, outcome: Outcome) -> None:
        pass

    def progress(self, done: int, total: int) -> str:
        return f"{done}/{total}"


class _Runner:
    """Asks a sampler for jobs, trains them on the pool, records every outcome in the manifest and tells it to
    the sampler, until the sampler has nothing more to ask."""

    def __init__(self, pool, manifest: Manifest, workers: int) -> None:
        self.pool, self.manifest, self.workers = pool, manifest, workers

    def run(self, sampler: Sampler | _JobList) -> None:
        jobs: list[Job] = []  # every job to train, in order: the pool starts each as a worker frees up
        asks: dict[int, list[int]] = {}  # id(job) -> [jobs told, jobs to train] of the ask it came from
        in_flight = 0

        def ask() -> None:
            """Ask while workers are free, until an ask brings a job to train (or none at all)."""
            nonlocal in_flight
            while in_flight < self.workers:
                asked = sampler.ask(self.workers - in_flight)
                if not asked:
                    return
                todo = [job for job in asked if self._admit(job, sampler)]
                count = [0, len(todo)]
                for job in todo:
                    asks[id(job)] = count
                jobs.extend(todo)
                in_flight += len(todo)
                if todo:
                    return

        ask()
        for job, result in self.pool.run(jobs):
            in_flight -= 1
            if result["status"] == "failed":  # a worker that died had no chance to write its run's status
                mark_dead_run(self.manifest.out_dir / job.cfg.run_name(), result.get("reason", ""))
            o = self.manifest.record(job.cfg, job.stage, result["status"], result.get("reason", ""),
                                     result.get("seconds", 0.0))
            sampler.tell(job, o)
            count = asks.pop(id(job))
            count[0] += 1
            loss = f" val {o.val_loss:.4f}" if o.val_loss is not None else ""
            log.info(f"[{sampler.progress(*count)}] {o.run} {job.stage}: {o.outcome}{loss} ({o.seconds:.1f} s) "
                     f"{o.reason}")
            ask()

    def _admit(self, job: Job, sampler: Sampler | _JobList) -> bool:
        """Whether the job trains: not if its run is finished, or already paused at its step budget (that
        outcome is recorded and told at once); a fresh job always does."""
        self.manifest.register(job.cfg, job.stage)
        run_dir = self.manifest.out_dir / job.cfg.run_name()
        status = read_status(run_dir)
        if job.fresh:
            return True
        if status["status"] in FINISHED:
            o = self.manifest.record(job.cfg, job.stage, "skipped",
                                     f"already {status['status']}: {status.get('reason', '')}", 0.0)
        elif job.stop_at_step and status["status"] == "paused" and status.get("step", 0) >= job.stop_at_step:
            o = self.manifest.record(job.cfg, job.stage, "paused", status.get("reason", ""), 0.0)
        else:
            remove_leftovers(run_dir)
            return True
        sampler.tell(job, o)
        return False


def run_continue_best(runner: _Runner, epochs: float, cap: int | None) -> None:
    """Train the finished run with the lowest val loss for `epochs` more epochs, from its best.pt."""
    manifest = runner.manifest
    finished = [(o.val_loss, c) for name, c in manifest.configs.items()
                if (o := manifest.last.get(name)) and o.val_loss is not None
                and read_status(manifest.out_dir / name)["status"] == "done"]
    if not finished:
        log.warning("--continue_best: no finished run to continue")
        return
    best_loss, best = min(finished, key=lambda t: (t[0], t[1].run_name()))
    parent = manifest.out_dir / best.run_name()
    cfg = best.replace(parent=str(parent), epochs=float(epochs))
    if cap:
        cfg = cap_steps([cfg], cap)[0]
    log.info(f"continuing the best run {best.run_name()} (val loss {best_loss:.4f}) for {epochs:g} epochs "
             f"as {cfg.run_name()}")
    runner.run(_JobList([Job(cfg, None, "continue_best")]))


# --------------------------------------------------------------------------------------------------
# the batch
# --------------------------------------------------------------------------------------------------
def ensure_corpora(configs: list[RunConfig], st: BatchSettings) -> None:
    """Every corpus the batch trains on (or times, --estimate) is here, downloaded once before any worker
    starts, or one DataError. A plain dry run needs none; a Ray cluster's nodes read their own copies."""
    if (st.dry_run and not st.estimate) or (st.backend == "ray" and st.address):
        return
    for corpus in sorted({c.corpus for c in configs}):
        ensure_corpus(corpus)


def train_batch(overrides: dict[str, Any] | None = None, console: bool = True, **settings: Any) -> BatchReport:
    """Sample a space (a preset or a file) and train every config; see the module docstring.

    settings: BatchSettings fields. overrides: RunConfig settings applied to every config (they replace the
    space's values and axes). The report's exit_code is 1 if any run failed; user mistakes raise
    ConfigError before anything trains.
    """
    st = BatchSettings(**{k: str(v) if isinstance(v, Path) else v for k, v in settings.items()})
    if st.backend == "ray" and not st.dry_run:
        import_ray()  # fail before sampling, not after
    fixed = dict(overrides or {})
    if st.device:
        fixed["device"] = st.device
    sp = load_space(st.preset, st.space).with_overrides(fixed)
    options = SamplerOptions(n_runs=st.n_runs, seed=st.seed, eta=st.eta, pruner=st.pruner, objectives=st.objectives,
                             fresh=not st.skip_existing)
    name = st.sampler or sp.sampler
    sampler = SAMPLERS[name](name, sp, options, Placement(Path(st.out_dir), st.max_steps))
    configs = sampler.plan()
    res = plan_resources(configs, st.backend, st.workers, st.runs_per_gpu, st.gpus_per_run, fixed.get("threads"),
                         st.address)
    ensure_corpora(configs, st)
    if st.dry_run:
        for note in res.notes:
            print(f"warning: {note}", file=sys.stderr)
        if sampler.dry_run_note():
            print(sampler.dry_run_note())
        return BatchReport(outcomes=print_plan(configs, Path(st.out_dir), f"space {sp.name}: {sp.description}".rstrip(": "),
                                               st.estimate, res.workers, res.threads))
    return _train(st, sp, sampler, res, fixed, console)


def _train(st: BatchSettings, sp: Space, sampler: Sampler, res: Resources, fixed: dict[str, Any],
           console: bool) -> BatchReport:
    """The batch proper, once its plan holds: lock, log, manifest, pool; ask, train, tell; continue the best."""
    backend, address, out_dir = st.backend, st.address, Path(st.out_dir)
    # Ray is joined before anything is written: a cluster this machine cannot join is a user mistake
    pool = RayPool(res.threads, res.gpus_per_run, address, res.workers * res.threads) if backend == "ray" else None
    try:
        lock = batch_lock(out_dir)
    except ConfigError:
        if pool:
            pool.close()
        raise
    log_path = setup_logging("batch", st.log_dir, console=console)
    for note in res.notes:
        log.warning(note)
    fixed_threads = backend == "ray" or bool(fixed.get("threads"))  # Ray's: the CPUs it reserves per task
    if fixed_threads:
        sampler.placement.threads = res.threads
    manifest = Manifest(out_dir, manifest_path(log_path), _header(st, sp, sampler, res, fixed, log_path))

    # a cluster's tasks run on its nodes: only a batch training here tells other jobs it uses this CPU
    here = backend == "local" or not address
    with resources.registered("batch", res.workers) if here else contextlib.nullcontext() as job:
        pool = pool or LocalPool(res.workers, fixed.get("threads") or 0, res.devices, log_path, job=job)
        runner = _Runner(pool, manifest, res.workers)
        try:  # from here on, whatever fails (a sampler's journal Optuna cannot replay, ...) frees the lock and pool
            sampler.start(manifest)
            log.info(f"batch: {len(sampler.plan())} configs from space {sp.name} ({sampler.name}), {res.workers} "
                     f"{backend} workers x {res.threads} threads{'' if fixed_threads else ' (sized as each run starts)'}"
                     f"{', GPUs ' + ','.join(res.devices) if res.devices else ''}; manifest {manifest.path}")
            if planned := sampler.planned():
                for cfg in planned:
                    manifest.register(cfg, "planned")
                manifest.write()
            runner.run(sampler)
            if epochs_more := _continue_best(st, sp):
                run_continue_best(runner, epochs_more, st.max_steps)
        finally:
            pool.close()
            lock.release()
    manifest.write(finished=True)
    report = BatchReport(outcomes=manifest.outcomes(), manifest_path=manifest.path, log_path=log_path)
    log.info("\n" + report.table())
    log.info(f"runs in {out_dir}/, manifest {manifest.path}, log {log_path}")
    return report


def _continue_best(st: BatchSettings, sp: Space) -> float:
    """Epochs to train the best run afterwards: the command line's, else the space's (0: none)."""
    return sp.continue_best if st.continue_best is None else st.continue_best


def _header(st: BatchSettings, sp: Space, sampler: Sampler, res: Resources, fixed: dict[str, Any],
            log_path: Path) -> dict[str, Any]:
    """The manifest's header: what the batch was asked to do, and where."""
    own = sampler.header()
    return {"space": sp.name, "description": sp.description, "sampler": sampler.name, "seed": st.seed,
            "n_runs": own["n_runs"], "pruner": st.pruner, "objectives": st.objectives, "eta": own["eta"],
            "max_steps_cap": st.max_steps, "skip_existing": st.skip_existing, "continue_best": _continue_best(st, sp),
            "overrides": fixed, "backend": st.backend, "address": st.address, "resources": asdict(res),
            "out_dir": str(Path(st.out_dir)), "log": str(log_path), "argv": sys.argv,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
