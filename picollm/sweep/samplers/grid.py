"""grid: every point of the space, in order (configs entries, then families, then the product of the axes),
one per fingerprint; ``n_runs`` keeps the first n."""

from __future__ import annotations

from typing import TYPE_CHECKING

from picollm.config import RunConfig
from picollm.sweep.samplers.base import Collector, FixedSampler

if TYPE_CHECKING:
    from picollm.sweep.space import Space


def grid_configs(space: Space, n_runs: int | None = None) -> list[RunConfig]:
    """Every valid point of the space in order, one per fingerprint (the first n_runs if given)."""
    c = Collector(space)
    for point in space.points():
        c.add(point)
        if n_runs and len(c.configs) >= n_runs:
            break
    return c.result()


class GridSampler(FixedSampler):
    @classmethod
    def draw(cls, space: Space, n_runs: int | None, seed: int) -> list[RunConfig]:
        return grid_configs(space, n_runs)
