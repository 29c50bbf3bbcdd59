#!/usr/bin/env python
"""The training loss, forward + backward, in three forms: over (B, V, T) logits (a transposed view), over
(B*T, V) rows, and the rows through torch.compile (the trainer's --compile_loss).

    python bench/loss_layout.py [--threads 1] [--repeat 30] [--dtype fp32,bf16]

The trainer and the evaluator used to pass logits.transpose(1, 2): the softmax then runs over a strided
dimension and autograd copies the view. The rows are what both pass now; training compiles them where
picollm.train.loss.wants_compiled_loss says so (auto: batch x block x vocabulary >= COMPILE_MIN_LOGITS on a
CPU). The logits come in as fp32 (an fp32 run) or bf16 (a bf16 run's head under autocast; the loss casts them
to fp32 first, as train_step does). Interleaved timings, the median of --repeat after one untimed call each
(which builds the compiled kernels), one line per shape and dtype:

    loss_layout B= T= V= dtype= transposed_ms= rows_ms= compiled_ms= ratio= compiled_speedup= auto_compiles=

ratio is transposed / rows; compiled_speedup is rows / compiled; auto_compiles says what --compile_loss auto
picks for that shape.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from picollm.train.loss import TrainingLoss, rows_cross_entropy, wants_compiled_loss

#: (batch, tokens, vocabulary): PTB's small LSTM (the PyTorch example's BPTT 20), picollm's PTB recipe,
#: lstm-wikitext2's (33k words), and nanoGPT's CPU character shape
SHAPES = [(20, 20, 10000), (32, 35, 10000), (20, 30, 33278), (12, 64, 65)]
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def time_once(loss_fn) -> float:
    start = time.perf_counter()
    loss_fn().backward()
    return time.perf_counter() - start


def variants(logits: torch.Tensor, y: torch.Tensor) -> dict:
    compiled = TrainingLoss(compiled=True)
    return {"transposed": lambda: F.cross_entropy(logits.float().transpose(1, 2), y),
            "rows": lambda: rows_cross_entropy(logits, y),
            "compiled": lambda: compiled(logits, y)}


def bench(B: int, T: int, V: int, dtype: str, repeat: int) -> str:
    logits = torch.randn(B, T, V, dtype=DTYPES[dtype], requires_grad=True)
    y = torch.randint(0, V, (B, T))
    fns = variants(logits, y)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():
        time_once(fn)  # untimed: builds the compiled kernels (or loads them from inductor's cache)
    for _ in range(repeat):
        for name, fn in fns.items():
            times[name].append(time_once(fn))
    t, r, c = (statistics.median(times[n]) * 1e3 for n in fns)
    auto = wants_compiled_loss("auto", torch.device("cpu"), B * T * V)
    return (f"loss_layout B={B} T={T} V={V} dtype={dtype} transposed_ms={t:.2f} rows_ms={r:.2f} "
            f"compiled_ms={c:.2f} ratio={t / r:.2f} compiled_speedup={r / c:.2f} auto_compiles={auto}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--dtype", default="fp32,bf16", help="comma-separated, of: fp32, bf16")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for B, T, V in SHAPES:
        for dtype in args.dtype.split(","):
            print(bench(B, T, V, dtype, args.repeat), flush=True)


if __name__ == "__main__":
    main()
