#!/usr/bin/env python
"""What the transformer's optional parts cost per training step: the default model, the default less each part,
and the model with none of them, interleaved (one step of each in turn, so the machine's load hits all alike).

    python bench/transformer_parts.py [--steps 60] [--threads 1]

The step is the trainer's (bench/precision_speed.py's step_fn: forward under --precision auto's autocast, the
loss, backward, clipping, the recipe's Muon + AdamW) at the time-to-quality shape, 4 x 4 x 128, block 64, batch
12. The parts are those of PARTS (Canon layers, attention gates, value embeddings, normalised embeddings), each
switched off by its value in picollm.config.OMITTED_AT, the value that trains as the code did before it. Prints
each model's parameters and median step time, then one line `transformer_parts <variant>=<its step / the step
with none> ...`.
"""

from __future__ import annotations

import argparse
import subprocess

import torch
from precision_speed import interleaved, step_fn

from picollm.config import OMITTED_AT, RunConfig
from picollm.core.devices import resolve_precision
from picollm.models import build_model

SHAPE = dict(model="transformer", embed=128, layers=4, heads=4, block_size=64, batch_size=12)
VOCAB = 65
PARTS = ("canon", "attn_gate", "value_embed", "embed_norm")


def variants() -> dict[str, RunConfig]:
    """'default', 'without <part>' for each part the default has on, 'none' (every part off)."""
    default = RunConfig(**SHAPE)
    on = [part for part in PARTS if getattr(default, part) != OMITTED_AT[part]]
    off = {part: OMITTED_AT[part] for part in PARTS}
    return {"default": default, **{f"without_{part}": default.replace(**{part: off[part]}) for part in on},
            "none": default.replace(**off)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=60, help="timed steps of each variant")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    configs = variants()
    num_params = build_model(configs["default"], VOCAB).num_params()
    precision = resolve_precision("auto", torch.device("cpu"), num_params)  # what this shape trains in here
    print(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    print(f"torch {torch.__version__}, {args.threads} thread(s), precision {precision}")
    steps, sizes = {}, {}
    for name, cfg in configs.items():
        torch.manual_seed(0)
        model = build_model(cfg, VOCAB).train()
        sizes[name] = model.num_params()
        x, y = (torch.randint(0, VOCAB, (cfg.batch_size, cfg.block_size)) for _ in range(2))
        steps[name] = step_fn(model, cfg, precision, x, y)
    times = interleaved(steps, args.steps, warmup=5)
    for name, seconds in times.items():
        print(f"{name:24s} {sizes[name]:9,d} parameters   step {seconds * 1e3:7.2f} ms")
    print("transformer_parts " + " ".join(f"{name}={t / times['none']:.3f}" for name, t in times.items()
                                          if name != "none"))


if __name__ == "__main__":
    main()
