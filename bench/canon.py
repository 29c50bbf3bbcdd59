#!/usr/bin/env python
"""What the transformer's Canon layers cost: a training step with and without them, and the layer against
F.conv1d, interleaved (one of each in turn, so the machine's load hits both alike).

    python bench/canon.py [--steps 60] [--threads 1]

The step is the trainer's (bench/precision_speed.py's step_fn: forward under --precision auto's autocast, the
loss, backward, clipping, the recipe's Muon + AdamW) at the time-to-quality shape, 4 x 4 x 128, block 64,
batch 12, with --canon 4 (the default, before the MLP) and with --canon 0. The layer alone (forward and backward of one Canon
layer at 12 x 64 x 128, its multiply-adds of shifted inputs) is timed against the same convolution as
F.conv1d(groups=C), after checking that the two give the same numbers and gradients. Prints the median times,
then one line `canon step_ratio=<with / without> conv1d_ratio=<conv1d / Canon>`.
"""

from __future__ import annotations

import argparse
import subprocess
from collections.abc import Callable

import torch
import torch.nn.functional as F
from precision_speed import interleaved, step_fn

from picollm.config import RunConfig
from picollm.core.devices import resolve_precision
from picollm.models import build_model
from picollm.models.transformer.model import Canon

SHAPE = dict(model="transformer", embed=128, layers=4, heads=4, block_size=64, batch_size=12)
VOCAB = 65


def training_steps(precision: str) -> dict[str, Callable[[], None]]:
    steps = {}
    for name, canon in (("with", 4), ("without", 0)):
        cfg = RunConfig(**SHAPE, canon=canon)
        torch.manual_seed(0)
        model = build_model(cfg, VOCAB).train()
        x, y = (torch.randint(0, VOCAB, (cfg.batch_size, cfg.block_size)) for _ in range(2))
        steps[name] = step_fn(model, cfg, precision, x, y)
    return steps


def layer_passes(precision: str) -> dict[str, Callable[[], None]]:
    torch.manual_seed(0)
    layer = Canon(128, 4)
    layer.weight.data.normal_()
    width = layer.weight.size(-1)
    h = torch.randn(12, 64, 128, requires_grad=True)
    grad = torch.randn_like(h)

    def conv1d(h: torch.Tensor) -> torch.Tensor:
        padded = F.pad(h.transpose(1, 2), (width - 1, 0))
        return h + F.conv1d(padded, layer.weight.to(h.dtype), groups=h.size(-1)).transpose(1, 2)

    forms = {"Canon": lambda h: layer(h, None)[0], "conv1d": conv1d}
    reference = None
    for form in forms.values():
        out = form(h)
        got = (out, *torch.autograd.grad(out, (h, layer.weight), grad))
        if reference is not None:
            for a, b in zip(got, reference):
                torch.testing.assert_close(a, b)
        reference = got
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")

    def run(forward: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[], None]:
        def once() -> None:
            with autocast:
                out = forward(h)
            out.float().backward(grad)
        return once

    return {name: run(form) for name, form in forms.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=60, help="timed steps (and 10x as many layer passes) of each")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    num_params = build_model(RunConfig(**SHAPE), VOCAB).num_params()
    precision = resolve_precision("auto", torch.device("cpu"), num_params)  # what this shape trains in here
    print(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    print(f"torch {torch.__version__}, {args.threads} thread(s), precision {precision}")
    step = interleaved(training_steps(precision), args.steps, warmup=5)
    print(f"training step   with Canon layers {step['with'] * 1e3:7.2f} ms   without {step['without'] * 1e3:7.2f} ms")
    layer = interleaved(layer_passes(precision), 10 * args.steps, warmup=5)
    print("one layer, forward and backward   " + "   ".join(f"{name} {t * 1e3:6.3f} ms" for name, t in layer.items()))
    print(f"canon step_ratio={step['with'] / step['without']:.3f} conv1d_ratio={layer['conv1d'] / layer['Canon']:.2f}")


if __name__ == "__main__":
    main()
