#!/usr/bin/env python
"""Where a training step's time goes: one or more preset rows, timed interleaved, then torch.profiler's top ops.

    python bench/step_profile.py [--runs ptb-xlstm-ablation:4 ptb-small-picollm:1] [--repeat 8] [--top 12]
                                 [--threads 1] [--precision auto|fp32|bf16] [--by_shape]

Each PRESET:ROW (ROW counts from 1, in the preset's order; PRESET:ROW:compile for the same under
torch.compile, compiled during the warm-up steps; PRESET:ROW:SETTING=VALUE, as often as needed, for the same
with a setting changed, e.g. ptb-small-muon:1:compile_loss=off) is set up by the training loop's start_run, as `picollm
batch` trains it (its seed, model, optimizer, --precision resolved for that model on this CPU), in a scratch
run directory, with batches of its own shape from the corpus's train split; a step is the loop's train_step
(forward, backward, clipping, optimizer step). The runs' steps are timed interleaved, one of each in turn (each first in turn),
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
import tempfile
import time
from dataclasses import fields
from pathlib import Path

import torch
import yaml
from torch.profiler import ProfilerActivity, profile

from picollm.config import RunConfig
from picollm.data.batching import random_windows
from picollm.sweep.samplers.base import sample
from picollm.sweep.space import load_space
from picollm.train.loop import prepare_run_data, start_run, train_step


def setting_value(name: str, text: str):
    """A setting's value from its text: as written for a string setting, else read as YAML (as presets are;
    YAML would read a string like "off" as False)."""
    kind = {f.name: f.metadata.get("kind") for f in fields(RunConfig)}[name]
    return text if kind is str else yaml.safe_load(text)


class Lane:
    """One preset row, set up by the training loop's own start_run (in a scratch run directory), ready to step."""

    def __init__(self, spec: str, precision: str, threads: int, scratch: Path) -> None:
        preset, row, *extras = spec.split(":")
        self.name = spec
        changes = dict(extra.split("=", 1) for extra in extras if "=" in extra)
        self.cfg = sample(load_space(preset))[int(row) - 1].replace(
            **{"precision": precision, "threads": threads, **{k: setting_value(k, v) for k, v in changes.items()}})
        run_dir = scratch / spec.replace(":", "-")
        run_dir.mkdir()
        tokenizer, splits = prepare_run_data(self.cfg, run_dir)
        self.run = start_run(self.cfg, run_dir, tokenizer, len(splits["train"]))
        self.model = torch.compile(self.run.model) if "compile" in extras else self.run.model
        self.x, self.y = random_windows(splits["train"], self.cfg.batch_size, self.cfg.block_size,
                                        torch.Generator().manual_seed(0))

    def step(self) -> float:
        start = time.perf_counter()
        train_step(self.run, self.model, self.x, self.y, carry=False, measure=False)
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
    os.system("uptime")
    with tempfile.TemporaryDirectory() as scratch:
        lanes = [Lane(spec, args.precision, args.threads, Path(scratch)) for spec in args.runs]
        times = interleaved(lanes, args.repeat, args.warmup)
    for lane in lanes:
        ms = [t * 1000 for t in times[lane.name]]
        print(f"step_profile run={lane.name} model={lane.cfg.model} params={lane.run.model.num_params()} "
              f"precision={lane.run.precision}"
              f" step_ms={statistics.median(ms):.1f} step_ms_min={min(ms):.1f}")
        print(top_ops(lane, args.profile_steps, args.top, args.by_shape))
    first = statistics.median(times[lanes[0].name])
    for lane in lanes[1:]:
        print(f"step_profile_ratio {lane.name}/{lanes[0].name}={statistics.median(times[lane.name]) / first:.3f}")


if __name__ == "__main__":
    main()
