#!/usr/bin/env python
"""Derive Muon's Newton-Schulz schedules (picollm.train.muon.POLAR3) and show what each does to singular values.

    python bench/ns_schedule.py [--steps 3] [--lower 1e-3] [--safety 1.01]

Muon replaces an update G = U S V^T by ~U V^T with a few steps X <- a X + b (X X^T) X + c (X X^T)^2 X, each
the odd quintic p(s) = a s + b s^3 + c s^5 applied to every singular value. Keller Jordan's iteration uses
one (a, b, c) five times. A Polar-Express schedule (Amsel, Persson, Musco, Gower 2025, arXiv:2505.16932)
picks each step's quintic greedily: the one closest to 1 in the worst case (minimax) over the interval of
singular values the steps before leave, starting from [--lower, 1] (G is scaled to Frobenius norm 1, so
its singular values are <= 1); the next interval is [min p, max p] over this one. Each quintic's input is
then divided by --safety (its coefficients by safety, safety^3, safety^5), so that bfloat16's rounding of
X cannot push a singular value past where the polynomial still maps it near 1.

The minimax problem is a linear program on a grid of the interval (scipy's HiGHS: min t subject to
|1 - p(s)| <= t at 8,000 points, geometric and uniform); picollm.train.muon keeps the coefficients rounded
to 6 decimals and tests/train/test_muon.py checks them against this derivation.

Prints the schedule, then for it and for Keller Jordan's five steps: p(s) at s = 1e-4 ... 1 and the range of
the composed map over [--lower, 1].
"""

from __future__ import annotations

import argparse

import numpy as np
from scipy.optimize import linprog

JORDAN = (3.4445, -4.7750, 2.0315)


def minimax_quintic(lower: float, upper: float, points: int = 4000) -> tuple[tuple[float, float, float], float, float]:
    """The odd quintic closest to 1 in the worst case on [lower, upper]; and its min and max there."""
    s = np.concatenate([np.geomspace(lower, upper, points), np.linspace(lower, upper, points)])
    powers = np.stack([s, s**3, s**5], axis=1)
    ones = np.ones((len(s), 1))
    # variables (a, b, c, t): minimise t subject to 1 - p(s) <= t and p(s) - 1 <= t
    constraints = np.block([[-powers, -ones], [powers, -ones]])
    bounds = np.concatenate([-ones[:, 0], ones[:, 0]])
    result = linprog([0, 0, 0, 1], A_ub=constraints, b_ub=bounds, bounds=[(None, None)] * 3 + [(0, None)],
                     method="highs")
    if not result.success:
        raise RuntimeError(f"linprog failed on [{lower}, {upper}]: {result.message}")
    a, b, c, _ = result.x
    p = powers @ np.array([a, b, c])
    return (float(a), float(b), float(c)), float(p.min()), float(p.max())


def polar_express(steps: int, lower: float, safety: float) -> tuple[tuple[float, float, float], ...]:
    """The greedy schedule of `steps` quintics from [lower, 1], each with its input divided by safety,
    rounded to 6 decimals (the digits picollm keeps)."""
    schedule, upper = [], 1.0
    for _ in range(steps):
        (a, b, c), lower, upper = minimax_quintic(lower, upper)
        schedule.append(tuple(round(v, 6) for v in (a / safety, b / safety**3, c / safety**5)))
    return tuple(schedule)


def compose(schedule, s: np.ndarray) -> np.ndarray:
    for a, b, c in schedule:
        s = a * s + b * s**3 + c * s**5
    return s


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--lower", type=float, default=1e-3, help="smallest singular value to bring near 1")
    p.add_argument("--safety", type=float, default=1.01)
    args = p.parse_args()
    schedule = polar_express(args.steps, args.lower, args.safety)
    print(f"polar_express steps={args.steps} lower={args.lower:g} safety={args.safety:g}:")
    for abc in schedule:
        print(f"    ({abc[0]}, {abc[1]}, {abc[2]}),")
    s = np.geomspace(1e-4, 1, 9)
    grid = np.geomspace(args.lower, 1, 100_000)
    print("s:            " + " ".join(f"{v:6.0e}" for v in s))
    for name, sched in ((f"polar{args.steps}", schedule), ("jordan5", (JORDAN,) * 5)):
        mapped = compose(sched, grid)
        print(f"{name + ':':<14}" + " ".join(f"{v:6.3f}" for v in compose(sched, s))
              + f"   on [{args.lower:g}, 1]: {mapped.min():.3f} to {mapped.max():.3f}")


if __name__ == "__main__":
    main()
