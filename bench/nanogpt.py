#!/usr/bin/env python
"""Time to quality against nanoGPT itself: nanoGPT and picollm trained side by side, scored alike.

    PYTHONPATH=$PWD PICOLLM_DATA_DIR=/work/shared/data \\
        python bench/nanogpt.py --nanogpt /path/to/nanoGPT [--steps 2000] [--budget 275] [--target 1.88]

--nanogpt is a checkout of github.com/karpathy/nanoGPT; it is read, never written: train.py, model.py,
configurator.py, config/ and data/shakespeare_char/prepare.py are copied into a temporary directory, with
picollm's own copy of Tiny Shakespeare as its input.txt (so prepare.py downloads nothing), and nanoGPT
prepares its data (not timed) and trains there.

Two lanes run at the same moment, as separate processes of one torch thread each (OMP_NUM_THREADS=1,
MKL_NUM_THREADS=1; picollm also gets --threads 1), so the machine's state (its clock, the other jobs on
it) hits both alike:

- nanoGPT: the CPU reference config of its README (train_shakespeare_char.py with --device=cpu
  --compile=False --eval_iters=20 --log_interval=1 --block_size=64 --batch_size=12 --n_layer=4 --n_head=4
  --n_embd=128 --max_iters=--steps --lr_decay_iters=--steps --dropout=0.0), plus --always_save_checkpoint=True
  so that ckpt.pt holds the model after the last iteration, not the one with the best 20-batch val estimate;
- picollm: its default transformer recipe at the same shape (4 x 4 x 128, block 64, batch 12), first
  --budget steps, then --steps steps, each evaluated every --eval_interval steps on its whole valid split.
  The 2,000-step run overlaps nanoGPT only in part (the machine has 2 cores, no room for a third lane).

Wall time is the whole process (time.perf_counter around the subprocess: start-up, data, evaluation,
checkpoints). The --budget run's training seconds to the target come from its metrics.csv (elapsed_sec,
evaluation and checkpoints not counted).

Both are scored on the same held-out characters, picollm's valid split of Tiny Shakespeare (characters
[0.90 n, 0.95 n) of input.txt; both train on the first int(0.9 n), so neither has seen them): read as
12 contiguous streams in non-overlapping 64-character windows, each window from a fresh context, mean
cross-entropy in nats over every target (picollm.train.evaluate.evaluate, which picollm itself reports as
val_loss with --eval_tokens 0). The two vocabularies agree: nanoGPT's meta.pkl maps the 65 distinct
characters of input.txt, sorted, to 0..64; picollm's char tokenizer maps the characters of its train split,
sorted, to 0..N-1 and U+FFFD to N, and its train split holds all 65 characters, so ids 0..64 are the same
characters and the valid split encodes to the same ids under both (checked at every run; id 65, U+FFFD,
never occurs). nanoGPT's val (every character after 0.9 n) contains picollm's valid split.

Prints `uptime`, one line per run, then:

    nanogpt time_to_quality picollm_wall_N=W (N: --budget) nanogpt_wall_2000=X ratio=W/X picollm_val_2000=A nanogpt_val=B

W: whole-process wall of picollm's shortest run that reaches val loss <= --target (at any evaluation); X: nanoGPT's
whole-process wall; A, B: val loss on the same characters after --steps steps.
"""

from __future__ import annotations

import argparse
import os
import pickle
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from picollm.data.batching import prepare_data
from picollm.data.corpora import CORPORA, corpus_file
from picollm.train.evaluate import evaluate

ROOT = Path(__file__).resolve().parents[1]

BLOCK, BATCH = 64, 12
SHAPE = ["--models", "transformer", "--corpus", "tinyshakespeare", "--layers", "4", "--heads", "4", "--embed",
         "128", "--block_size", str(BLOCK), "--batch_size", str(BATCH)]
#: nanoGPT's README command for a CPU ("baby GPT" on shakespeare_char, scaled down)
NANOGPT_FLAGS = ["config/train_shakespeare_char.py", "--device=cpu", "--compile=False", "--eval_iters=20",
                 "--log_interval=1", f"--block_size={BLOCK}", f"--batch_size={BATCH}", "--n_layer=4",
                 "--n_head=4", "--n_embd=128", "--dropout=0.0"]
NANOGPT_FILES = ["train.py", "model.py", "configurator.py", "config", "data/shakespeare_char/prepare.py"]
NANOGPT_DATA = Path("data/shakespeare_char")
NANOGPT_WARMUP = 100  # train_shakespeare_char.py's warmup_iters: its lr schedule needs max_iters > this


@dataclass
class Run:
    name: str
    wall_s: float
    steps: int
    final_val: float
    target_step: int | None = None
    target_s: float | None = None

    def line(self, target: float) -> str:
        if self.name == "nanogpt":
            return (f"{'nanogpt@' + str(self.steps):<16} wall {self.wall_s:.1f} s; val at iter {self.steps}: "
                    f"{self.final_val:.4f} (same characters as picollm)")
        reached = (f"val <= {target} at step {self.target_step} after {self.target_s:.1f} s of training"
                   if self.target_step is not None else f"val <= {target} not reached")
        return (f"{self.name:<16} {reached}; wall {self.wall_s:.1f} s; val at step {self.steps}: "
                f"{self.final_val:.4f}")


def one_thread_env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def timed(cmd: list[str], cwd: Path, log: Path) -> float:
    """Run cmd to completion, stdout and stderr into log; its whole-process wall seconds."""
    with open(log, "w") as out:
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=one_thread_env())
        wall = time.perf_counter() - start
    if proc.returncode != 0:
        tail = log.read_text()[-2000:].strip()
        raise RuntimeError(f"{shlex.join(cmd)} exited {proc.returncode}:\n{tail}")
    return wall


# --- nanoGPT ------------------------------------------------------------------------------------------
def setup_nanogpt(checkout: Path, work: Path) -> float:
    """Copy nanoGPT's training files into work, with picollm's input.txt; run its prepare.py. Its seconds."""
    missing = [f for f in NANOGPT_FILES if not (checkout / f).exists()]
    if missing:
        raise SystemExit(f"error: {checkout} is not a nanoGPT checkout (no {', '.join(missing)})")
    for f in NANOGPT_FILES:
        src, dst = checkout / f, work / f
        dst.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, dst)
    spec = CORPORA["tinyshakespeare"]
    shutil.copy2(corpus_file(spec, spec.files["all"]), work / NANOGPT_DATA / "input.txt")
    return timed([sys.executable, str(NANOGPT_DATA / "prepare.py")], work, work / "prepare.log")


def nanogpt_command(steps: int) -> list[str]:
    # nanoGPT saves ckpt.pt only at an evaluation after iteration 0: evaluate at its last iteration
    eval_interval = 250 if steps % 250 == 0 else steps
    return [sys.executable, "train.py", *NANOGPT_FLAGS, f"--max_iters={steps}", f"--lr_decay_iters={steps}",
            f"--eval_interval={eval_interval}", "--always_save_checkpoint=True", "--out_dir=out"]


class _Scored(torch.nn.Module):
    """nanoGPT's GPT behind picollm's model interface, so picollm's own evaluation scores it."""

    carries_state = False

    def __init__(self, gpt: torch.nn.Module):
        super().__init__()
        self.gpt = gpt

    def forward(self, x: torch.Tensor, state: None) -> tuple[torch.Tensor, None]:
        # without targets nanoGPT returns the last position's logits only; any targets give every position's
        # (it views them flat, so contiguous)
        logits, _ = self.gpt(x, targets=x.contiguous())
        return logits, None


def nanogpt_valid(work: Path) -> torch.Tensor:
    """picollm's valid split (its ids), after checking nanoGPT's vocabulary gives every character the same id."""
    with open(work / NANOGPT_DATA / "meta.pkl", "rb") as f:
        meta = pickle.load(f)
    tok, splits = prepare_data("tinyshakespeare", "char")
    theirs = [meta["itos"][i] for i in range(meta["vocab_size"])]
    if tok.chars != theirs:
        raise SystemExit(f"error: nanoGPT's {len(theirs)} characters are not picollm's first {len(tok.chars)} ids")
    valid = splits["valid"]
    text = tok.decode(valid)
    if not torch.equal(torch.tensor([meta["stoi"][c] for c in text]), valid):
        raise SystemExit("error: the valid split encodes differently under nanoGPT's vocabulary")
    return valid


def score_nanogpt(work: Path) -> tuple[int, float]:
    """(iteration, mean cross-entropy on picollm's valid split) of nanoGPT's out/ckpt.pt."""
    sys.path.insert(0, str(work))
    from model import GPT, GPTConfig  # nanoGPT's model.py, copied into work

    ckpt = torch.load(work / "out" / "ckpt.pt", map_location="cpu", weights_only=False)
    gpt = GPT(GPTConfig(**ckpt["model_args"]))
    gpt.load_state_dict({k.removeprefix("_orig_mod."): v for k, v in ckpt["model"].items()})
    ev = evaluate(_Scored(gpt), nanogpt_valid(work), BATCH, BLOCK, torch.device("cpu"))
    return int(ckpt["iter_num"]), ev["loss"]


def nanogpt_own_val(log: Path) -> str:
    """nanoGPT's own estimate at its last evaluation (20 random batches of its val split), for reference."""
    lines = [ln for ln in log.read_text().splitlines() if ln.startswith("step ") and "val loss" in ln]
    return lines[-1].strip() if lines else "none"


# --- picollm ------------------------------------------------------------------------------------------
def picollm_run(name: str, flags: list[str], out_dir: Path, target: float) -> Run:
    cmd = [sys.executable, "-m", "picollm", "train", *flags, "--out_dir", str(out_dir)]
    out_dir.mkdir(parents=True)
    wall = timed(cmd, ROOT, out_dir / "train.log")
    (metrics,) = out_dir.glob("*/metrics.csv")
    m = pd.read_csv(metrics)
    hit = m[(m["step"] > 0) & (m["val_loss"] <= target)]
    last = m.iloc[-1]
    first = hit.iloc[0] if len(hit) else None
    return Run(name, wall, int(last["step"]), float(last["val_loss"]),
               None if first is None else int(first["step"]), None if first is None else float(first["elapsed_sec"]))


def picollm_lane(runs: list[tuple[str, list[str]]], root: Path, target: float, results: dict[str, Run]) -> None:
    for name, flags in runs:
        results[name] = picollm_run(name, flags, root / name, target)


def nanogpt_lane(work: Path, steps: int, results: dict[str, Run]) -> None:
    wall = timed(nanogpt_command(steps), work, work / "train.log")
    results["nanogpt"] = Run("nanogpt", wall, steps, float("nan"))


def guarded(fn, *args) -> None:
    """A lane's thread: report its failure and leave its result out, so the other lane still finishes."""
    try:
        fn(*args)
    except Exception as e:  # noqa: BLE001 - printed, then main() exits non-zero
        print(f"lane failed: {e}", file=sys.stderr, flush=True)


def summary_line(results: dict[str, Run], picollm_runs: list[str], steps: int) -> str:
    nano, long = results["nanogpt"], results[picollm_runs[-1]]
    reached = [results[n] for n in picollm_runs if results[n].target_step is not None]
    best = min(reached, key=lambda r: r.wall_s) if reached else None
    wall = f"{best.wall_s:.1f}" if best else "not_reached"
    ratio = f"{best.wall_s / nano.wall_s:.3f}" if best else "not_reached"
    return (f"nanogpt time_to_quality picollm_wall_{best.steps if best else 'none'}={wall} "
            f"nanogpt_wall_{steps}={nano.wall_s:.1f} ratio={ratio} picollm_val_{steps}={long.final_val:.4f} "
            f"nanogpt_val={nano.final_val:.4f}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nanogpt", required=True, help="a checkout of karpathy/nanoGPT (read only)")
    parser.add_argument("--steps", type=int, default=2000, help="nanoGPT's iterations and picollm's long run")
    parser.add_argument("--budget", type=int, default=275, help="steps of picollm's short run (0 = none): the fewest that reach 1.88 on every seed tried with the default (docs/results.md)")
    parser.add_argument("--target", type=float, default=1.88, help="val loss to reach")
    parser.add_argument("--eval_interval", type=int, default=50, help="picollm's evaluation interval")
    parser.add_argument("--picollm_flags", default="", help="extra `picollm train` flags")
    parser.add_argument("--out_dir", default="", help="keep both lanes' files here (default: a temporary directory)")
    args = parser.parse_args()
    if args.steps <= NANOGPT_WARMUP or args.budget < 0:
        parser.error(f"--steps must be > {NANOGPT_WARMUP} (nanoGPT's warmup_iters) and --budget >= 0")
    if not Path(args.nanogpt).is_dir():
        parser.error(f"--nanogpt {args.nanogpt} is not a directory")
    return args


def main() -> None:
    args = parse_args()
    torch.set_num_threads(1)  # scoring runs after both lanes; one thread like them
    print(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(), flush=True)
    flags = SHAPE + ["--threads", "1", "--no-progress", "--eval_interval", str(args.eval_interval),
                     "--eval_tokens", "0", *shlex.split(args.picollm_flags)]
    runs = [(f"picollm@{n}", flags + ["--max_steps", str(n)]) for n in (args.budget, args.steps) if n]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.out_dir or tmp)
        work = root / "nanogpt"
        work.mkdir(parents=True)
        prepare_s = setup_nanogpt(Path(args.nanogpt).resolve(), work)
        print(f"nanoGPT's prepare.py: {prepare_s:.1f} s (not counted)", flush=True)
        results: dict[str, Run] = {}
        lanes = [threading.Thread(target=guarded, args=(nanogpt_lane, work, args.steps, results)),
                 threading.Thread(target=guarded, args=(picollm_lane, runs, root, args.target, results))]
        for t in lanes:
            t.start()
        for t in lanes:
            t.join()
        if len(results) != 1 + len(runs):
            raise SystemExit("a lane failed (see above)")
        iters, results["nanogpt"].final_val = score_nanogpt(work)
        own = nanogpt_own_val(work / "train.log")
    print(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    print(f"nanoGPT's checkpoint: iter {iters}; its own estimate: {own}")
    for name in ["nanogpt", *(n for n, _ in runs)]:
        print(results[name].line(args.target))
    print(summary_line(results, [n for n, _ in runs], args.steps))


if __name__ == "__main__":
    main()
