#!/usr/bin/env python
"""Training-step time of bf16 autocast against fp32, per family, interleaved (one step of each in turn).

    python bench/precision_speed.py [--steps 40] [--threads 1]

Each case builds its model once and takes a full training step as the trainer does (forward under the
precision's autocast, the loss, backward, clipping, the family's default optimizer from make_optimizer,
whose Muon orthogonalises in bf16 under bf16 and in fp32 under fp32), alternating the two precisions step by
step so that the machine's load hits both alike. Prints the median step time of each and their ratio, then
one line `precision_speed <case>=<fp32 / bf16> ...`. bench/precision.py measures the quality side.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from picollm.config import RunConfig
from picollm.core.devices import autocast_context, cpu_has_bf16
from picollm.models import build_model
from picollm.train.optimizers import make_optimizer

CPU = torch.device("cpu")
#: (name, settings, vocabulary): tiny models, bench/precision.yaml's shapes (Tiny Shakespeare's 65 characters), and
#: PTB's LSTMs (10k words): the PyTorch example's shape and ptb-small-picollm's
CASES = [
    # the tour notebook's tiny runs (about 50k parameters): why --precision auto keeps such models in fp32
    ("lstm_tiny", dict(model="lstm", embed=32, hidden=64, layers=1, block_size=32, batch_size=16), 65),
    ("transformer_tiny", dict(model="transformer", embed=32, layers=1, heads=2, block_size=32, batch_size=16), 65),
    ("kgram_mlp", dict(model="kgram_mlp", embed=128, hidden=512, k=8, inner_layers=2, block_size=64, batch_size=12), 65),
    ("lstm", dict(model="lstm", embed=128, hidden=256, layers=2, block_size=64, batch_size=12), 65),
    ("xlstm", dict(model="xlstm", embed=128, hidden=128, layers=4, heads=4, block_size=64, batch_size=12), 65),
    ("transformer", dict(model="transformer", embed=128, layers=4, heads=4, block_size=64, batch_size=12), 65),
    ("lstm_ptb_example", dict(model="lstm", embed=200, hidden=200, layers=2, tie_weights=False, norm=False,
                              dropout=0.2, block_size=20, batch_size=20, optimizer="sgd", lr=20.0), 10000),
    ("lstm_ptb_picollm", dict(model="lstm", embed=200, hidden=430, layers=2, dropout=0.3, block_size=35,
                              batch_size=32, optimizer="adamw"), 10000),
]


def step_fn(model: torch.nn.Module, cfg: RunConfig, precision: str, x: torch.Tensor, y: torch.Tensor):
    opt = make_optimizer(model, cfg, CPU, low_precision=precision == "bf16")

    def step() -> None:
        with autocast_context(CPU, precision):
            logits, _ = model(x)
        loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    return step


def measure(settings: dict, vocab: int, steps: int) -> dict[str, float]:
    cfg = RunConfig(**settings)
    torch.manual_seed(0)
    model = build_model(cfg, vocab).train()
    x = torch.randint(0, vocab, (cfg.batch_size, cfg.block_size))
    y = torch.randint(0, vocab, (cfg.batch_size, cfg.block_size))
    return interleaved({p: step_fn(model, cfg, p, x, y) for p in ("fp32", "bf16")}, steps, warmup=3)


def interleaved(fns: dict[str, Callable[[], None]], n: int, warmup: int) -> dict[str, float]:
    """Median seconds of each fn, called in turn n times after `warmup` untimed rounds (the allocator,
    oneDNN's kernels), so the machine's load hits all alike."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for i in range(n + warmup):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40, help="timed steps of each precision per case")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    print(f"torch {torch.__version__}, {args.threads} thread(s), CPU bf16 units: {cpu_has_bf16()}")
    ratios = []
    for name, settings, vocab in CASES:
        t = measure(settings, vocab, args.steps)
        ratios.append(f"{name}={t['fp32'] / t['bf16']:.2f}")
        params = build_model(RunConfig(**settings), vocab).num_params()
        print(f"{name:<18} {params:>9,} params  fp32 {t['fp32'] * 1e3:8.1f} ms  bf16 {t['bf16'] * 1e3:8.1f} ms  fp32/bf16 "
              f"{t['fp32'] / t['bf16']:.2f}x")
    print("precision_speed " + " ".join(ratios))


if __name__ == "__main__":
    main()
