"""halving: successive halving over a random sample of the space (drawn as the random sampler draws it).

Every survivor trains to the rung's budget, then the best max(1, n // eta) go on. A rung's budget is a fraction
of each config's own step budget rounded up to an evaluation point, so the survivors' metrics equal those of
uninterrupted runs. Ranking reads only evaluations up to the budget, so a rerun of a killed batch picks the same
survivors. Eliminated runs are marked 'stopped' with their rank and keep their metrics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from picollm.config import RunConfig
from picollm.core.errors import CheckpointError, ConfigError
from picollm.core.log import get_logger
from picollm.runs.layout import progress_of, read_metrics, read_status, write_status
from picollm.sweep.jobs import Job, Outcome
from picollm.sweep.planning import total_steps_of
from picollm.sweep.samplers.base import SamplerOptions
from picollm.sweep.samplers.random import RandomSampler

if TYPE_CHECKING:
    from picollm.sweep.planning import Placement
    from picollm.sweep.space import Space

log = get_logger()


@dataclass(frozen=True)
class Rung:
    fraction: float
    """share of each config's full step budget trained by the end of this rung"""
    n_in: int
    """configs trained in this rung"""
    n_keep: int
    """configs that go on to the next rung (0 for the last)"""


def halving_schedule(n: int, eta: int = 3) -> list[Rung]:
    """Rungs of successive halving for n configs: keep the best max(1, n // eta) each time; the last rung
    trains the survivors to their full budget, and rung i trains to eta**-(rungs left) of it."""
    if n < 1 or eta < 2:
        raise ConfigError(f"successive halving needs n >= 1 configs and eta >= 2; got n={n}, eta={eta}")
    sizes = [n]
    while sizes[-1] > 1:
        sizes.append(max(1, sizes[-1] // eta))
    last = len(sizes) - 1
    return [Rung(fraction=float(eta) ** (i - last), n_in=s, n_keep=sizes[i + 1] if i < last else 0)
            for i, s in enumerate(sizes)]


def rung_budget(fraction: float, total_steps: int, eval_interval: int) -> int:
    """Steps to train by the end of a rung: the fraction of the total, rounded up to an evaluation point
    (so a config continued later has exactly the metrics of an uninterrupted run), at most the total."""
    steps = max(1, math.ceil(fraction * total_steps))
    return min(total_steps, math.ceil(steps / eval_interval) * eval_interval)


def best_val_loss_until(run_dir: Path, step: int) -> float:
    """Lowest validation loss of a run among its evaluations at steps 1..step (inf if none)."""
    if not (Path(run_dir) / "metrics.csv").exists() or read_status(run_dir)["status"] in ("failed", "diverged",
                                                                                        "corrupt"):
        return math.inf
    try:
        m = read_metrics(run_dir)
    except CheckpointError:  # a damaged metrics.csv ranks its run last, like a failed run
        return math.inf
    losses = m.loc[(m["step"] > 0) & (m["step"] <= step), "val_loss"].dropna()
    return float(losses.min()) if len(losses) else math.inf


class HalvingSampler(RandomSampler):
    """Asks for one rung at a time; when every job of a rung is told, ranks them and stops the eliminated."""

    def __init__(self, name: str, space: Space, options: SamplerOptions, placement: Placement) -> None:
        super().__init__(name, space, options, placement)
        self.eta = options.eta or space.eta
        self.rungs: list[Rung] = []
        self.rung = 0  # the rung asked last (1-based; 0: none yet)
        self.alive: list[RunConfig] = []
        self.totals: dict[str, int] = {}  # run name -> its full step budget
        self.budgets: dict[str, int] = {}  # run name -> its step budget in the rung asked last
        self.waiting = 0  # jobs of that rung not told yet

    def plan(self) -> list[RunConfig]:
        configs = super().plan()
        halving_schedule(len(configs), self.eta)  # validates eta
        return configs

    def header(self) -> dict[str, Any]:
        return {**super().header(), "eta": self.eta}

    def ask(self, free: int) -> list[Job] | None:
        if self.waiting:
            return []
        if not self.rungs:
            self.alive = self.planned()
            self.totals = {c.run_name(): total_steps_of(c) for c in self.alive}
            self.rungs = halving_schedule(len(self.alive), self.eta)
        elif self.rung == len(self.rungs):
            return None
        else:
            self._eliminate()
        self.rung += 1
        rung, last = self.rungs[self.rung - 1], self.rung == len(self.rungs)
        self.budgets = {c.run_name(): rung_budget(rung.fraction, self.totals[c.run_name()], c.eval_interval)
                        for c in self.alive}
        stage = f"rung {self.rung}/{len(self.rungs)}"
        log.info(f"successive halving {stage}: {len(self.alive)} configs to {rung.fraction:.3g} of their budget")
        fresh = self.options.fresh and self.rung == 1
        jobs = [Job(c, None if last else self.budgets[c.run_name()], stage, fresh) for c in self.alive]
        self.waiting = len(jobs)
        return jobs

    def tell(self, job: Job, outcome: Outcome) -> None:
        self.waiting -= 1

    def _eliminate(self) -> None:
        """Rank the rung just trained by val loss up to its budget; keep the best, stop the others."""
        manifest, rung = self.manifest, self.rungs[self.rung - 1]
        losses = {c.run_name(): best_val_loss_until(manifest.out_dir / c.run_name(), self.budgets[c.run_name()])
                  for c in self.alive}
        ranked = sorted(self.alive, key=lambda c: (losses[c.run_name()], c.run_name()))
        manifest.rankings.append({"rung": self.rung, "fraction": rung.fraction, "kept": rung.n_keep,
                                  "ranking": [{"run": c.run_name(), "step": self.budgets[c.run_name()],
                                               "val_loss": losses[c.run_name()]} for c in ranked]})
        for rank, cfg in enumerate(ranked[rung.n_keep:], rung.n_keep + 1):
            run_dir, name = manifest.out_dir / cfg.run_name(), cfg.run_name()
            status = read_status(run_dir)
            if status["status"] in ("paused", "running"):
                reason = (f"stopped by successive halving at step {self.budgets[name]}: val loss {losses[name]:.4f} "
                          f"ranked {rank} of {len(ranked)}")
                write_status(run_dir, "stopped", reason, **progress_of(status))
                manifest.record(cfg, f"rung {self.rung}/{len(self.rungs)}", "stopped", reason, 0.0)
        self.alive = ranked[: rung.n_keep]
        manifest.write()
