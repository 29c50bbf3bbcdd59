"""random: seeded draws (a configs entry, then a family, then one value per axis of that family), never two
configs with the same fingerprint; combinations a family rejects (embed not divisible by heads, ...) are drawn
again. ``n_runs`` defaults to the space's, else to min(16, the space's size)."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from picollm.config import RunConfig
from picollm.core.log import get_logger
from picollm.sweep.samplers.base import Collector, FixedSampler

if TYPE_CHECKING:
    from picollm.sweep.space import Space

log = get_logger()


def random_configs(space: Space, n_runs: int, seed: int) -> list[RunConfig]:
    """n_runs distinct (by fingerprint) valid configs drawn with random.Random(seed).

    When the space holds no more than n_runs points, it is enumerated and shuffled, so a small space
    gives all its configs and never loops looking for a new one.
    """
    rng = random.Random(seed)
    c = Collector(space)
    if space.size() <= n_runs:
        points = list(space.points())
        rng.shuffle(points)
        for point in points:
            c.add(point)
        if len(c.configs) < n_runs:
            log.info(f"space {space.name} has only {len(c.configs)} distinct valid configs (asked for {n_runs})")
        return c.result()
    attempts = 0
    while len(c.configs) < n_runs and attempts < 100 * n_runs + 1000:
        c.add(space.draw(rng))
        attempts += 1
    if len(c.configs) < n_runs:
        log.info(f"space {space.name}: found {len(c.configs)} distinct valid configs in {attempts} draws "
                 f"(asked for {n_runs})")
    return c.result()


class RandomSampler(FixedSampler):
    @classmethod
    def draw(cls, space: Space, n_runs: int | None, seed: int) -> list[RunConfig]:
        return random_configs(space, n_runs or min(space.size(), 16), seed)
