#!/usr/bin/env python
"""Throughput of N tiny runs on the GPU(s): one run at a time per GPU vs K runs packed on each GPU.

    python bench/gpu_packing.py [--runs 8] [--runs_per_gpu 4] [--max_steps 300] [--model transformer]

Small models leave a GPU mostly idle (kernel launches, Python, evaluation); packing K worker processes on
each GPU (batch_train.py --runs_per_gpu K) overlaps them. Both settings go through train_batch end to end
(worker start-up included) on the same configs in fresh directories; the table reports wall time, runs
per minute and training tokens per second summed over runs. Without CUDA it prints "no CUDA device".
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from picollm.core.text import format_table  # noqa: E402
from picollm.sweep.batch import train_batch


def write_space(path: Path, args: argparse.Namespace) -> None:
    """N configs of one tiny model that differ only in their seed (so N distinct runs of equal cost)."""
    base = {"corpus": args.corpus, "model": args.model, "embed": args.embed, "hidden": 2 * args.embed, "layers": 2,
            "heads": 4, "block_size": args.block_size, "batch_size": args.batch_size, "max_steps": args.max_steps,
            "eval_interval": args.max_steps, "eval_tokens": 8192, "device": "cuda"}
    path.write_text(json.dumps({"description": "gpu packing benchmark", "base": base,
                                "choices": {"seed": list(range(args.runs))}}))


def measure(space: Path, root: Path, runs_per_gpu: int, args: argparse.Namespace) -> dict:
    start = time.perf_counter()
    report = train_batch(space=str(space), runs_per_gpu=runs_per_gpu, out_dir=root / f"k{runs_per_gpu}",
                         log_dir=root / "logs", console=False)
    seconds = time.perf_counter() - start
    if report.exit_code:
        failed = [o for o in report.outcomes if o.outcome == "failed"]
        raise SystemExit(f"a run failed with --runs_per_gpu {runs_per_gpu}: {failed[0].reason}")
    tokens = args.runs * args.max_steps * args.batch_size * args.block_size
    return {"runs_per_gpu": runs_per_gpu, "wall_s": seconds, "runs_per_min": 60 * args.runs / seconds,
            "tokens_per_s": tokens / seconds, "mean_run_s": sum(o.seconds for o in report.outcomes) / len(report.outcomes)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=8, help="tiny runs in each setting")
    parser.add_argument("--runs_per_gpu", type=int, default=4, help="K: runs packed on each GPU")
    parser.add_argument("--max_steps", type=int, default=300)
    parser.add_argument("--model", default="transformer")
    parser.add_argument("--embed", type=int, default=64)
    parser.add_argument("--block_size", type=int, default=64)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--corpus", default="tinyshakespeare")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to measure (run this on a GPU machine)")
        return 0
    gpus = torch.cuda.device_count()
    print(f"{args.runs} runs of {args.model} (embed {args.embed}, {args.max_steps} steps) on {gpus} x "
          f"{torch.cuda.get_device_name(0)}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_space(root / "space.json", args)
        rows = [measure(root / "space.json", root, k, args) for k in (1, args.runs_per_gpu)]
    base = rows[0]["wall_s"]
    print(format_table(["runs/GPU", "wall s", "runs/min", "tokens/s", "mean s/run", "speed-up"],
                       [[str(r["runs_per_gpu"]), f"{r['wall_s']:.1f}", f"{r['runs_per_min']:.1f}",
                         f"{r['tokens_per_s']:,.0f}", f"{r['mean_run_s']:.1f}", f"{base / r['wall_s']:.2f}x"]
                        for r in rows]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
