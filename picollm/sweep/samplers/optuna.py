"""tpe, gp, cmaes, nsga2: Optuna's model-based samplers, which choose each config from the results told so far
(picollm.sweep.tuning.OptunaSearch: the study in a journal beside the runs, deduplication by fingerprint).

``n_runs`` distinct configs are trained (default: the space's, else 16), `free` at a time; trials a killed batch
left running are taken up first. A dry run shows a random sample of the space in their place.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from picollm.config import RunConfig
from picollm.sweep.jobs import Job, Outcome
from picollm.sweep.samplers.base import Sampler, SamplerOptions
from picollm.sweep.samplers.random import random_configs
from picollm.sweep.tuning import (
    OptunaSearch,
    TrialRun,
    check_journal,
    check_settings,
    journal_path,
    open_search,
    parse_objectives,
)

if TYPE_CHECKING:
    from picollm.sweep.manifest import Manifest
    from picollm.sweep.planning import Placement
    from picollm.sweep.space import Space


class OptunaSampler(Sampler):
    adaptive = True
    optimizes = True

    def __init__(self, name: str, space: Space, options: SamplerOptions, placement: Placement) -> None:
        super().__init__(name, space, options, placement)
        self.n_runs = options.n_runs or space.n_runs or 16
        self.search: OptunaSearch | None = None
        self._plan: list[RunConfig] | None = None
        self._resumed = False

    def check(self) -> None:
        check_settings(self.name, self.options.pruner, parse_objectives(self.options.objectives))
        check_journal(journal_path(self.placement.out_dir, self.space.name))  # before the batch writes anything

    def plan(self) -> list[RunConfig]:
        if self._plan is None:
            self._plan = self.placement.place(random_configs(self.space, self.n_runs, self.options.seed))
        return self._plan

    def header(self) -> dict[str, Any]:
        return {"n_runs": self.n_runs, "eta": None}

    def dry_run_note(self) -> str:
        return f"--sampler {self.name} chooses {self.n_runs} configs as results come in; a random sample of the space:"

    def start(self, manifest: Manifest) -> None:
        super().start(manifest)
        self.search = open_search(manifest.out_dir, self.space, self.name, self.options.seed, self.options.pruner,
                                  parse_objectives(self.options.objectives), self._prepare)

    def _prepare(self, cfg: RunConfig) -> RunConfig:
        """What the batch does to every config (step cap, out_dir, threads), before it is fingerprinted."""
        return self.placement.finish(self.placement.place([cfg])[0])

    def ask(self, free: int) -> list[Job]:
        """The trials a killed batch left running (the first time), then new ones for the free workers, until
        n_runs distinct configs have a trial."""
        jobs = [] if self._resumed else [self._job(t) for t in self.search.unfinished()]
        self._resumed = True
        while len(jobs) < free and self.search.distinct() < self.n_runs and (t := self.search.ask()) is not None:
            jobs.append(self._job(t))
        return jobs

    def _job(self, t: TrialRun) -> Job:
        return Job(t.cfg, stage=f"trial {t.trial.number}", trial=self.search.job_info(t), handle=t)

    def tell(self, job: Job, outcome: Outcome) -> None:
        self.search.finish(job.handle)

    def progress(self, done: int, total: int) -> str:
        return f"{self.search.distinct()}/{self.n_runs}"
