#!/usr/bin/env python
"""A training step with Muon against one with AdamW, at the time-to-quality shape and the PTB LSTM's.

    python bench/muon.py [--repeat 60] [--lstm_repeat 15] [--threads 1] [--precision auto|fp32|bf16]

Shapes: picollm's transformer at nanoGPT's CPU reference (4 layers x 4 heads x 128, block 64, batch 12,
Tiny Shakespeare's 65 characters; the default recipe, so --optimizer auto is Muon with --split_qkv), and the
PTB LSTM of ptb-small-picollm (2 x 430, embed 200, tied, dropout 0.3, batch 32 x 35, 10k words). Token ids
are random: the time of a step does not depend on them. Variants, each on its own copy of the same model,
built by make_optimizer:

    adamw           --optimizer adamw: AdamW on every parameter
    torch           torch.optim.Muon on the hidden matrices (one matrix at a time, Keller Jordan's 5 steps in
                    bfloat16), AdamW on the rest
    jordan5-bf16    picollm's Muon with --muon_ns jordan5: the same 5 steps batched per shape, in bfloat16
                    (make_optimizer's low_precision True; torch.optim.Muon's numbers)
    polar3-fp32     picollm's Muon as it trains by default (--muon_ns polar3: 3 Newton-Schulz steps), in float32
                    (low_precision False, fp32 runs; 2:1 and wider matrices on their Gram matrix)
    polar3-bf16     the same in bfloat16 (low_precision True: bf16 runs)

A step is forward + backward + gradient clipping + optimizer step, as train_step runs it (under bf16
autocast if --precision resolves to bf16 for the model, as `picollm train --precision` does, else fp32; the
loss compiled where --compile_loss auto compiles it: the LSTM's, not the transformer's);
`opt` is the optimizer step alone. The variants are timed interleaved, one step of each in turn (each first in turn),
so load from other processes on a shared machine hits all alike; median and min over the repeats. Per
shape, after one line per variant:

    muon_step_ratio precision=P polar3_bf16=B polar3_fp32=F jordan5_bf16=J torch=T

each a median full step with that Muon over the median full step with AdamW (and the same of the minima:
muon_step_ratio_min, the better estimate on a busy machine); P is the precision the steps ran at. The
variant a run of that precision trains with is polar3_bf16 for bf16 and polar3_fp32 for fp32. Prints
`uptime` first.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time

import torch

from picollm.config import RunConfig
from picollm.core.devices import autocast_context, resolve_precision
from picollm.models import build_model
from picollm.train.loss import TrainingLoss, wants_compiled_loss
from picollm.train.optimizers import Optimizers, make_optimizer

CPU = torch.device("cpu")
SHAPES = {
    "transformer 4x4x128": (dict(model="transformer", layers=4, heads=4, embed=128, block_size=64,
                                 batch_size=12), 65),
    "lstm ptb 2x430": (dict(model="lstm", layers=2, embed=200, hidden=430, tie_weights=True, dropout=0.3,
                            block_size=35, batch_size=32), 10_000),
}
VARIANTS = ["adamw", "torch", "jordan5-bf16", "polar3-fp32", "polar3-bf16"]


def torch_muon(opt: Optimizers) -> Optimizers:
    """The same optimizers with torch.optim.Muon in place of picollm's: the path before batching."""
    muon, adamw = opt.optimizers
    groups = [{k: v for k, v in g.items() if k in ("params", "lr_scale")} for g in muon.param_groups]
    group = muon.param_groups[0]
    return Optimizers(torch.optim.Muon(groups, lr=group["lr"], weight_decay=group["weight_decay"]), adamw)


def variant_optimizer(name: str, model: torch.nn.Module, cfg: RunConfig):
    if name == "adamw":
        return make_optimizer(model, cfg.replace(optimizer="adamw"), CPU)
    muon_ns = "polar3" if name.startswith("polar3") else "jordan5"
    opt = make_optimizer(model, cfg.replace(optimizer="muon", muon_ns=muon_ns), CPU,
                         low_precision=name.endswith("bf16"))
    return torch_muon(opt) if name == "torch" else opt


Times = dict[str, tuple[list[float], list[float]]]  # variant -> (whole steps, optimizer steps), seconds


def timed_step(model: torch.nn.Module, opt, x: torch.Tensor, y: torch.Tensor, grad_clip: float,
               precision: str, loss_fn: TrainingLoss) -> tuple[float, float]:
    """One training step as train_step runs it: (seconds of the whole step, seconds of opt.step())."""
    start = time.perf_counter()
    with autocast_context(CPU, precision):
        logits, _ = model(x)
    loss = loss_fn(logits, y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    before_step = time.perf_counter()
    opt.step()
    end = time.perf_counter()
    return end - start, end - before_step


def bench_shape(settings: dict, vocab: int, repeat: int, warmup: int, precision: str) -> tuple[Times, str]:
    cfg = RunConfig(**settings)
    torch.manual_seed(0)
    base = build_model(cfg, vocab).train()
    precision = resolve_precision(precision, CPU, sum(p.numel() for p in base.parameters()))
    lanes = {}
    for name in VARIANTS:
        model = copy.deepcopy(base)
        lanes[name] = (model, variant_optimizer(name, model, cfg))
    x = torch.randint(0, vocab, (cfg.batch_size, cfg.block_size + 1))
    # the loss as training computes it at this shape (--compile_loss auto: compiled for the PTB LSTM's)
    loss_fn = TrainingLoss(wants_compiled_loss("auto", CPU, cfg.batch_size * cfg.block_size * vocab))
    inputs, targets = x[:, :-1], x[:, 1:]
    times: Times = {name: ([], []) for name in VARIANTS}
    for r in range(warmup + repeat):
        for name in VARIANTS[r % len(VARIANTS):] + VARIANTS[:r % len(VARIANTS)]:  # each goes first in turn
            model, opt = lanes[name]
            step_s, opt_s = timed_step(model, opt, inputs, targets, cfg.grad_clip, precision, loss_fn)
            if r >= warmup:
                times[name][0].append(step_s)
                times[name][1].append(opt_s)
    return times, precision


def report(shape: str, times: Times, precision: str) -> None:
    med = {name: statistics.median(step) for name, (step, _) in times.items()}
    for name, (step, opt) in times.items():
        print(f"{shape:<20} {name:<10} step median {1e3 * med[name]:7.1f} ms  min {1e3 * min(step):7.1f} ms  "
              f"opt median {1e3 * statistics.median(opt):6.1f} ms  min {1e3 * min(opt):6.1f} ms   "
              f"step / adamw {med[name] / med['adamw']:.3f}", flush=True)
    for label, of in (("muon_step_ratio", statistics.median), ("muon_step_ratio_min", min)):
        step = {name: of(times[name][0]) for name in times}
        ratio = " ".join(f"{v.replace('-', '_')}={step[v] / step['adamw']:.3f}"
                         for v in ("polar3-bf16", "polar3-fp32", "jordan5-bf16", "torch"))
        print(f"{shape:<20} {label} precision={precision} {ratio}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=60, help="timed steps per variant, transformer")
    p.add_argument("--lstm_repeat", type=int, default=15, help="timed steps per variant, LSTM")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"),
                   help="forward and backward as picollm train --precision runs them (auto: per model size)")
    p.add_argument("--shapes", default=",".join(SHAPES), help="comma-separated, of: " + ", ".join(SHAPES))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"uptime: {os.popen('uptime').read().strip()}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    for shape in args.shapes.split(","):
        settings, vocab = SHAPES[shape]
        repeat = args.lstm_repeat if settings["model"] == "lstm" else args.repeat
        report(shape, *bench_shape(settings, vocab, repeat, args.warmup, args.precision))
    print(f"uptime: {os.popen('uptime').read().strip()}")


if __name__ == "__main__":
    main()
