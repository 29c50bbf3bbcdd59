#!/usr/bin/env python
"""Where a training step's time goes: one or more preset rows, timed interleaved, then torch.profiler's top ops.

    python bench/step_profile.py [--runs ptb-xlstm-ablation:4 ptb-small-picollm:1] [--repeat 8] [--top 12]
                                 [--threads 1] [--precision auto|fp32|bf16] [--by_shape]

Each PRESET:ROW (ROW counts from 1, in the preset's order; PRESET:ROW:compile for the same under
torch.compile, compiled during the warm-up steps) is built as `picollm batch` would train it: its RunConfig,
its model, make_optimizer's optimizer, --precision resolved for that model on this CPU, batches of its own
shape from the corpus's train split. A step is forward + backward + gradient clipping + optimizer
step, as train_step runs it. The runs' steps are timed interleaved, one of each in turn (each first in turn),
so load from other processes hits all alike; then each is profiled for --profile_steps steps. Prints `uptime`,
then per run:

    step_profile run=PRESET:ROW model=M params=N precision=P step_ms=MEDIAN step_ms_min=MIN

and its --top ops by self CPU time (per step; --by_shape splits each op by its input shapes), and, with two
or more runs, `step_profile_ratio PRESET:ROW/FIRST=R` for each after the first (medians).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from picollm.core.devices import autocast_context, resolve_precision
from picollm.data.batching import prepare_data, random_windows
from picollm.models import build_model
from picollm.sweep.samplers.base import sample
from picollm.sweep.space import load_space
from picollm.train.optimizers import make_optimizer

CPU = torch.device("cpu")


class Lane:
    """One preset row, ready to step."""

    def __init__(self, spec: str, precision: str) -> None:
        preset, row, *compiled = spec.split(":")
        self.name, self.cfg = spec, sample(load_space(preset))[int(row) - 1]
        tokenizer, splits = prepare_data(self.cfg.corpus, self.cfg.tokenizer, self.cfg.bpe_vocab_size)
        torch.manual_seed(0)
        self.model = build_model(self.cfg, tokenizer.vocab_size).train()
        self.params = sum(p.numel() for p in self.model.parameters())
        if compiled == ["compile"]:
            self.model = torch.compile(self.model)
        self.precision = resolve_precision(precision, CPU, self.params)
        self.opt = make_optimizer(self.model, self.cfg, CPU, low_precision=self.precision == "bf16")
        self.x, self.y = random_windows(splits["train"], self.cfg.batch_size, self.cfg.block_size,
                                        torch.Generator().manual_seed(0))

    def step(self) -> float:
        start = time.perf_counter()
        with autocast_context(CPU, self.precision):
            logits, _ = self.model(self.x)
        loss = F.cross_entropy(logits.float().flatten(0, 1), self.y.flatten())
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.opt.step()
        return time.perf_counter() - start


def interleaved(lanes: list[Lane], repeat: int, warmup: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {lane.name: [] for lane in lanes}
    for r in range(warmup + repeat):
        for lane in lanes[r % len(lanes):] + lanes[:r % len(lanes)]:
            seconds = lane.step()
            if r >= warmup:
                times[lane.name].append(seconds)
    return times


def top_ops(lane: Lane, steps: int, top: int, by_shape: bool) -> str:
    with profile(activities=[ProfilerActivity.CPU], record_shapes=by_shape) as prof:
        for _ in range(steps):
            lane.step()
    events = sorted(prof.key_averages(group_by_input_shape=by_shape), key=lambda e: -e.self_cpu_time_total)
    lines = [f"  {e.self_cpu_time_total / 1000 / steps:9.1f} ms/step {e.count // steps:5d} calls  {e.key}"
             + (f"  {e.input_shapes}" if by_shape else "") for e in events[:top]]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", nargs="+", default=["ptb-xlstm-ablation:4", "ptb-small-picollm:1"])
    parser.add_argument("--repeat", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--profile_steps", type=int, default=3)
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto")
    parser.add_argument("--by_shape", action="store_true", help="split each op by its input shapes")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.system("uptime")
    lanes = [Lane(spec, args.precision) for spec in args.runs]
    times = interleaved(lanes, args.repeat, args.warmup)
    for lane in lanes:
        ms = [t * 1000 for t in times[lane.name]]
        print(f"step_profile run={lane.name} model={lane.cfg.model} params={lane.params} precision={lane.precision}"
              f" step_ms={statistics.median(ms):.1f} step_ms_min={min(ms):.1f}")
        print(top_ops(lane, args.profile_steps, args.top, args.by_shape))
    first = statistics.median(times[lanes[0].name])
    for lane in lanes[1:]:
        print(f"step_profile_ratio {lane.name}/{lanes[0].name}={statistics.median(times[lane.name]) / first:.3f}")


if __name__ == "__main__":
    main()
