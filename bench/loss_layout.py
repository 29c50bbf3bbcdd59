#!/usr/bin/env python
"""Cross-entropy over (B, V, T) logits (a transposed view) against (B*T, V) rows, forward + backward.

    python bench/loss_layout.py [--threads 1] [--repeat 30]

The trainer and the evaluator used to pass logits.transpose(1, 2): the softmax then runs over a strided
dimension and autograd copies the view. The two layouts give the same loss; interleaved timings, the median
of --repeat, one line per shape and a ratio (transposed / rows).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

#: (batch, tokens, vocabulary): PTB's small LSTM (the PyTorch example's BPTT 20), picollm's PTB recipe, and
#: nanoGPT's CPU character shape
SHAPES = [(20, 20, 10000), (32, 35, 10000), (12, 64, 65)]


def time_once(loss_fn) -> float:
    start = time.perf_counter()
    loss_fn().backward()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for B, T, V in SHAPES:
        logits = torch.randn(B, T, V, requires_grad=True)
        y = torch.randint(0, V, (B, T))
        variants = {"transposed": lambda logits=logits, y=y: F.cross_entropy(logits.transpose(1, 2), y),
                    "rows": lambda logits=logits, y=y: F.cross_entropy(logits.flatten(0, 1), y.flatten())}
        times: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.repeat):
            for name, fn in variants.items():
                times[name].append(time_once(fn))
        t, r = (statistics.median(times[n]) * 1e3 for n in variants)
        print(f"loss_layout B={B} T={T} V={V} transposed_ms={t:.2f} rows_ms={r:.2f} ratio={t / r:.2f}")


if __name__ == "__main__":
    main()
