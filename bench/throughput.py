#!/usr/bin/env python
"""Training throughput (tokens/s of forward + backward + AdamW step) per family at fixed small configs.

    python bench/throughput.py [--steps 30] [--threads 2] [--device cpu]

The 'transformer (nanoGPT ref)' row uses nanoGPT's reference setting (n_layer 4, n_head 4, n_embd 128,
block 64, batch 12), which trains at about 14k tokens/s with nanoGPT itself on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from picollm.config import RunConfig
from picollm.models import build_model

VOCAB = 65  # Tiny Shakespeare's characters
CASES = [
    ("kgram_mlp", dict(model="kgram_mlp", embed=64, hidden=256, k=5, inner_layers=2, block_size=64, batch_size=32)),
    ("lstm", dict(model="lstm", embed=128, hidden=128, layers=2, block_size=64, batch_size=32)),
    ("xlstm [1:1]", dict(model="xlstm", embed=128, hidden=128, layers=2, heads=4, block_size=64, batch_size=32)),
    ("transformer", dict(model="transformer", embed=128, layers=2, heads=4, block_size=64, batch_size=32)),
    ("transformer (nanoGPT ref)", dict(model="transformer", embed=128, layers=4, heads=4, block_size=64, batch_size=12)),
]


def measure(settings: dict, steps: int, device: str) -> tuple[int, float]:
    cfg = RunConfig(**settings)
    torch.manual_seed(0)
    model = build_model(cfg, VOCAB).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randint(0, VOCAB, (cfg.batch_size, cfg.block_size + 1), device=device)
    inputs, targets = x[:, :-1], x[:, 1:]

    def step() -> None:
        logits, _ = model(inputs)
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(5):  # warm-up: allocator, kernels
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return model.num_params(), steps * cfg.batch_size * cfg.block_size / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30, help="timed steps per family")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}")
    print(f"{'family':<27} {'params':>9} {'batch x block':>13} {'tokens/s':>10}")
    for name, settings in CASES:
        params, tps = measure(settings, args.steps, args.device)
        shape = f"{settings['batch_size']} x {settings['block_size']}"
        print(f"{name:<27} {params:>9,} {shape:>13} {tps:>10,.0f}")


if __name__ == "__main__":
    main()
