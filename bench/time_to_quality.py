#!/usr/bin/env python
"""Time to quality: the old default recipe against the new one, trained side by side.

    python bench/time_to_quality.py [--steps 2000] [--budget 300] [--target 1.88]
                                    [--new_flags "--muon_lr 0.03"] [--baseline_flags "..."]

Both lanes train picollm's transformer at nanoGPT's CPU reference shape (4 layers x 4 heads x 128, block 64,
batch 12, Tiny Shakespeare) at the same time, as two processes of one torch thread each, so they share
the machine's state (its clock, the other jobs on it) alike. Every run evaluates every --eval_interval
steps on the whole valid split (non-overlapping 64-character windows); evaluation and checkpoint time is
not counted as training time.

- baseline lane: --steps steps of the recipe picollm had before (AdamW 1e-3, cosine to 1e-4, warmup 100,
  weight decay 0.1; every flag spelled out, so it runs the same whatever the defaults become);
- new lane: the current defaults at the same shape, first at a budget of --budget steps (every schedule
  spans its run's own step budget, so this run decays by its end), then --steps steps.

For each run it prints the first evaluation at which val loss <= --target (step and training seconds, or
"not reached") and the val loss at its end, then one line:

    time_to_quality new_steps=M new_s=Y baseline_2000_s=X ratio=Y/X baseline_val=A new_val=B

new_steps / new_s: the new recipe's fewest training seconds to the target over its runs; X: the baseline's
training seconds for --steps steps; A, B: val loss after --steps steps.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
SHAPE = ["--models", "transformer", "--corpus", "tinyshakespeare", "--layers", "4", "--heads", "4", "--embed",
         "128", "--block_size", "64", "--batch_size", "12"]
#: the recipe every default was before the time-to-quality work, spelled out flag by flag
BASELINE = ["--optimizer", "adamw", "--lr", "1e-3", "--schedule", "cosine", "--min_lr_ratio", "0.1",
            "--warmup_steps", "100", "--weight_decay", "0.1", "--beta1", "0.9", "--beta2", "0.99",
            "--grad_clip", "1.0", "--tie_weights", "--positional", "learned", "--no-qk_norm",
            "--mlp_activation", "gelu", "--no-zero_init_proj", "--canon", "0", "--no-attn_gate", "--no-value_embed",
            "--no-embed_norm", "--dropout", "0", "--precision", "fp32"]


@dataclass
class Result:
    name: str
    steps: int
    target_step: int | None
    target_s: float | None
    final_val: float
    train_s: float

    def line(self, target: float) -> str:
        reached = (f"val <= {target} at step {self.target_step} after {self.target_s:.1f} s"
                   if self.target_step is not None else f"val <= {target} not reached")
        return (f"{self.name:<22} {reached}; val at step {self.steps}: {self.final_val:.4f} "
                f"(trained {self.train_s:.1f} s)")


def train(flags: list[str], out_dir: Path) -> Path:
    """One main.py run in its own out_dir and process; the run directory."""
    cmd = [sys.executable, str(ROOT / "main.py"), *flags, "--out_dir", str(out_dir), "--threads", "1",
           "--no-progress"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} exited {proc.returncode}:\n{proc.stderr.strip()[-2000:]}")
    (run_dir,) = [p.parent for p in out_dir.glob("*/metrics.csv")]
    return run_dir


def read_result(name: str, run_dir: Path, target: float) -> Result:
    m = pd.read_csv(run_dir / "metrics.csv")
    hit = m[(m["step"] > 0) & (m["val_loss"] <= target)]
    first = hit.iloc[0] if len(hit) else None
    last = m.iloc[-1]
    return Result(name, int(last["step"]), None if first is None else int(first["step"]),
                  None if first is None else float(first["elapsed_sec"]), float(last["val_loss"]),
                  float(last["elapsed_sec"]))


def lane(runs: list[tuple[str, list[str]]], root: Path, target: float, results: dict[str, Result]) -> None:
    for name, flags in runs:
        results[name] = read_result(name, train(flags, root / name), target)


def summary_line(results: dict[str, Result], steps: int) -> str:
    base, new_long = results["baseline"], results["new"]
    reached = [r for r in results.values() if r.name != "baseline" and r.target_s is not None]
    best = min(reached, key=lambda r: r.target_s) if reached else None
    new_steps = best.target_step if best else "not_reached"
    new_s = f"{best.target_s:.1f}" if best else "not_reached"
    ratio = f"{best.target_s / base.train_s:.3f}" if best else "not_reached"
    return (f"time_to_quality new_steps={new_steps} new_s={new_s} baseline_{steps}_s={base.train_s:.1f} "
            f"ratio={ratio} baseline_val={base.final_val:.4f} new_val={new_long.final_val:.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2000, help="steps of the baseline and of the new recipe's long run")
    parser.add_argument("--budget", type=int, default=300, help="steps of the new recipe's short run (0 = none)")
    parser.add_argument("--target", type=float, default=1.88, help="val loss to reach")
    parser.add_argument("--eval_interval", type=int, default=50)
    parser.add_argument("--new_flags", default="", help="extra main.py flags for the new recipe")
    parser.add_argument("--baseline_flags", default="", help="extra main.py flags for the baseline")
    parser.add_argument("--out_dir", default="", help="keep the runs here (default: a temporary directory)")
    args = parser.parse_args()
    common = SHAPE + ["--eval_interval", str(args.eval_interval), "--eval_tokens", "0"]
    baseline = [("baseline", common + BASELINE + ["--max_steps", str(args.steps)] + shlex.split(args.baseline_flags))]
    new = common + shlex.split(args.new_flags)
    new_runs = ([(f"new@{args.budget}", new + ["--max_steps", str(args.budget)])] if args.budget else [])
    new_runs.append(("new", new + ["--max_steps", str(args.steps)]))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.out_dir) if args.out_dir else Path(tmp)
        results: dict[str, Result] = {}
        lanes = [threading.Thread(target=lane, args=(runs, root, args.target, results))
                 for runs in (baseline, new_runs)]
        for t in lanes:
            t.start()
        for t in lanes:
            t.join()
    if len(results) != 1 + len(new_runs):
        raise SystemExit("a lane failed (see above)")
    for name, _ in baseline + new_runs:
        print(results[name].line(args.target))
    print(summary_line(results, args.steps))


if __name__ == "__main__":
    main()
