"""The one protocol every sampler follows, Optuna's ask-and-tell: the batch asks for jobs, trains them, and
tells the sampler each outcome, until the sampler has nothing more to ask.

    sampler = SAMPLERS[name](name, space, options, placement)   # checks the options: one-line ConfigErrors
    sampler.plan()              # the configs a dry run shows and the batch is sized by
    sampler.start(manifest)     # once the batch holds its lock, before the first ask
    jobs = sampler.ask(free)    # jobs to start now: [] waits for results, None is done
    sampler.tell(job, outcome)  # every job's outcome, as it comes (a skipped or paused run's too)

Resuming is the runs' own: a finished run is skipped and an interrupted one resumes from last.pt, so a sampler
that makes the same decisions from the same results (halving ranks by the metrics on disk; Optuna keeps its
trials in a journal beside the runs) gives a rerun of a killed batch the uninterrupted batch's runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from picollm.config import RunConfig
from picollm.core.errors import ConfigError
from picollm.core.log import get_logger
from picollm.sweep.jobs import Job, Outcome

if TYPE_CHECKING:  # the space module reads this registry, so the samplers take a Space without importing it
    from picollm.sweep.manifest import Manifest
    from picollm.sweep.planning import Placement
    from picollm.sweep.space import Space

log = get_logger()

#: name -> Sampler class; --sampler, the `sampler:` key of space files and the tests read it
SAMPLERS: dict[str, type[Sampler]] = {}


def register_sampler(name: str, sampler: type[Sampler]) -> type[Sampler]:
    """Make `sampler` the one --sampler NAME chooses (or replace the one of that name)."""
    SAMPLERS[name] = sampler
    return sampler


@dataclass(frozen=True)
class SamplerOptions:
    """The batch's settings that samplers read (each sampler takes what it needs)."""

    n_runs: int | None = None
    """configs to choose (None: the space's own)"""
    seed: int = 0
    eta: int | None = None
    """successive halving: keep the best 1/eta at every rung (None: the space's)"""
    pruner: str = "none"
    objectives: str = "val_loss"
    fresh: bool = False
    """retrain finished runs (--no-skip_existing)"""


class Sampler:
    """Chooses the configs a batch trains; see the module docstring for the protocol."""

    adaptive: ClassVar[bool] = False
    """chooses its configs as results come in (a dry run shows a random sample of the space instead)"""
    optimizes: ClassVar[bool] = False
    """minimises --objectives, and may stop runs early with --pruner"""

    def __init__(self, name: str, space: Space, options: SamplerOptions, placement: Placement) -> None:
        self.name, self.space, self.options, self.placement = name, space, options, placement
        self.manifest: Manifest | None = None
        self.check()

    def check(self) -> None:
        """The options this sampler cannot honour, as one-line ConfigErrors before anything runs."""
        if not self.optimizes and (self.options.pruner != "none" or self.options.objectives != "val_loss"):
            optimizers = ", ".join(name for name, sampler in SAMPLERS.items() if sampler.optimizes)
            raise ConfigError(f"--pruner and --objectives go with an Optuna sampler ({optimizers}); the sampler "
                              f"here is {self.name}")

    def plan(self) -> list[RunConfig]:
        """The configs a dry run shows, placed (Placement.place), and by which the batch is sized."""
        raise NotImplementedError

    def planned(self) -> list[RunConfig]:
        """The configs known before any result, as they will train: the manifest lists them from the start."""
        return []

    def start(self, manifest: Manifest) -> None:
        """Called once the batch holds its lock (nothing trained yet), before the first ask."""
        self.manifest = manifest

    def ask(self, free: int) -> list[Job] | None:
        """Jobs to start now (`free` workers are idle: a hint); [] waits for results to be told, None is done."""
        raise NotImplementedError

    def tell(self, job: Job, outcome: Outcome) -> None:
        """The outcome of one asked job (done, failed, stopped, skipped because it was finished, ...)."""

    def progress(self, done: int, total: int) -> str:
        """The count shown in each run's log line: `done` of the `total` jobs of the ask it came from."""
        return f"{done}/{total}"

    def header(self) -> dict[str, Any]:
        """The sampler's fields of the manifest's header."""
        return {"n_runs": len(self.plan()), "eta": None}

    def dry_run_note(self) -> str:
        """A line the dry run prints above the plan ('' for none)."""
        return ""


class FixedSampler(Sampler):
    """A sampler whose configs are all drawn up front (draw()), then asked for at once."""

    def __init__(self, name: str, space: Space, options: SamplerOptions, placement: Placement) -> None:
        super().__init__(name, space, options, placement)
        self._configs: list[RunConfig] | None = None
        self._asked = False

    @classmethod
    def draw(cls, space: Space, n_runs: int | None, seed: int) -> list[RunConfig]:
        """The configs of the space this sampler trains (n_runs: the command line's or the space's)."""
        raise NotImplementedError

    def plan(self) -> list[RunConfig]:
        if self._configs is None:
            self._configs = self.placement.place(sample(self.space, self.name, self.options.n_runs,
                                                        self.options.seed))
        return self._configs

    def planned(self) -> list[RunConfig]:
        return [self.placement.finish(c) for c in self.plan()]

    def ask(self, free: int) -> list[Job] | None:
        if self._asked:
            return None
        self._asked = True
        return [Job(cfg, fresh=self.options.fresh) for cfg in self.planned()]


def sample(space: Space, sampler: str | None = None, n_runs: int | None = None, seed: int = 0) -> list[RunConfig]:
    """The configs a sampler that draws up front trains: sampler / n_runs default to the space's own (grid,
    all points)."""
    sampler = sampler or space.sampler
    n_runs = space.n_runs if n_runs is None else n_runs  # 0 is a mistake, not "all"
    if sampler not in SAMPLERS:
        raise ConfigError(f"--sampler must be one of {', '.join(SAMPLERS)}; got {sampler!r}")
    if not issubclass(SAMPLERS[sampler], FixedSampler):
        raise ConfigError(f"--sampler {sampler} chooses configs as results come in: use batch_train.py / train_batch")
    if n_runs is not None and n_runs < 1:
        raise ConfigError(f"--n_runs must be >= 1; got {n_runs}")
    return SAMPLERS[sampler].draw(space, n_runs, seed)


class Collector:
    """Builds RunConfigs from points, keeping the first of each fingerprint and counting invalid ones."""

    def __init__(self, space: Space) -> None:
        self.space = space
        self.configs: list[RunConfig] = []
        self.seen: set[str] = set()
        self.invalid = 0
        self.first_error = ""

    def add(self, point: dict[str, Any]) -> bool:
        try:
            cfg = RunConfig(**point)
        except ConfigError as e:  # a combination the family rejects: skipped (other errors, e.g. data, propagate)
            self.invalid += 1
            self.first_error = self.first_error or str(e)
            return False
        fp = cfg.fingerprint()
        if fp in self.seen:
            return False
        self.seen.add(fp)
        self.configs.append(cfg)
        return True

    def result(self) -> list[RunConfig]:
        if not self.configs:
            raise ConfigError(f"space {self.space.name} has no valid config: {self.first_error}")
        if self.invalid:
            log.warning(f"space {self.space.name}: skipped {self.invalid} invalid combination(s), e.g. {self.first_error}")
        return self.configs

