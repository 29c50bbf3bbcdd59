"""Samplers: how a batch chooses the configs it trains, every one behind the ask-and-tell protocol of base.Sampler.

    grid      every point of the space, in order                 (grid.py)
    random    seeded draws, one per fingerprint                  (random.py)
    halving   successive halving over a random sample            (halving.py)
    tpe, gp, cmaes, nsga2   Optuna's, from the results so far    (optuna.py, over picollm.sweep.tuning)

Adding a sampler: write samplers/<name>.py with a Sampler subclass (plan, ask, tell; FixedSampler, as in grid.py,
when every config is drawn up front: then only draw()), and register it below with
register_sampler("<name>", YourSampler). --sampler, the `sampler:` key of space files and the tests read SAMPLERS;
the batch asks, trains and tells, whatever the sampler.
"""

from picollm.sweep.samplers.base import (
    SAMPLERS,
    FixedSampler,
    Sampler,
    SamplerOptions,
    register_sampler,
    sample,
)
from picollm.sweep.samplers.grid import GridSampler
from picollm.sweep.samplers.halving import HalvingSampler
from picollm.sweep.samplers.optuna import OptunaSampler
from picollm.sweep.samplers.random import RandomSampler
from picollm.sweep.tuning import OPTUNA_SAMPLERS

register_sampler("grid", GridSampler)
register_sampler("random", RandomSampler)
register_sampler("halving", HalvingSampler)
for _name in OPTUNA_SAMPLERS:
    register_sampler(_name, OptunaSampler)

__all__ = ["SAMPLERS", "FixedSampler", "Sampler", "SamplerOptions", "register_sampler", "sample"]
