#!/usr/bin/env python
"""picollm's LSTM against PyTorch's word_language_model example: one epoch of PTB, both trained at once.

    python bench/lstm_vs_example.py --example PATH/TO/pytorch-examples/word_language_model
                                    [--epochs 1] [--precision auto] [--picollm_flags "..."]

The shape and recipe are the example's LSTM at Zaremba et al.'s small size: 2 x 200, untied, dropout 0.2,
batch 20, BPTT 20, plain SGD at lr 20 with the gradient norm clipped to 0.25, uniform(-0.1, 0.1) embeddings
and decoder; picollm is given the same settings flag by flag (no LayerNorm, constant rate, no warmup, no
weight decay). The two run as two processes at the same moment with one thread each (the example through
OMP_NUM_THREADS=1, picollm through --threads 1), so they share the machine's state alike. Each is scored on
the whole PTB valid split after the epoch. Prints each side's whole-process wall time and its own epoch
time (the example's "end of epoch" time includes its validation pass; picollm's training seconds do not),
validation perplexity, then one line

    lstm_vs_example train_ratio=<example / picollm> wall_ratio=<example / picollm> example_ppl=... ...

train_ratio is the throughput ratio (the example's training seconds: its logged mean ms/batch times its
batches; picollm's: status.json's train_seconds, evaluation not counted); wall_ratio the whole processes'.

A checkout of pytorch/examples is not a dependency: point --example at one (git clone
https://github.com/pytorch/examples).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ["--models", "lstm", "--corpus", "ptb", "--layers", "2", "--embed", "200", "--hidden", "200",
          "--no-tie_weights", "--no-norm", "--dropout", "0.2", "--batch_size", "20", "--block_size", "20",
          "--batching", "stream", "--optimizer", "sgd", "--lr", "20", "--grad_clip", "0.25", "--schedule",
          "constant", "--warmup_steps", "0", "--weight_decay", "0", "--eval_tokens", "0"]


def timed(cmd: list[str], cwd: Path, env: dict[str, str], results: dict, key: str) -> None:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    results[key] = (time.perf_counter() - start, proc)


def ptb_folder(tmp: Path) -> Path:
    """The example reads train.txt / valid.txt / test.txt: links to picollm's PTB files."""
    source = Path(os.environ.get("PICOLLM_DATA_DIR", ROOT / "data")) / "ptb"
    folder = tmp / "ptb"
    folder.mkdir()
    for split in ("train", "valid", "test"):
        (folder / f"{split}.txt").symlink_to((source / f"ptb.{split}.txt").resolve())
    return folder


def example_result(stdout: str) -> tuple[float, float, float]:
    """(epoch seconds, training seconds, valid ppl) of the example's run. Its "end of epoch" time includes
    the validation pass; the training seconds are its logged mean ms/batch times its batches."""
    ends = re.findall(r"end of epoch +\d+ \| time: +([\d.]+)s \| valid loss +[\d.]+ \| valid ppl +([\d.]+)", stdout)
    logged = re.findall(r"\| +\d+/ *(\d+) batches \|.*?ms/batch +([\d.]+)", stdout)
    if not ends or not logged:
        raise SystemExit(f"no 'end of epoch' or 'ms/batch' line from the example:\n{stdout[-2000:]}")
    per_batch = sum(float(ms) for _, ms in logged) / len(logged) / 1000
    batches = int(logged[-1][0]) * len(ends)
    return float(ends[-1][0]) * len(ends), per_batch * batches, float(ends[-1][1])


def picollm_result(out_dir: Path) -> tuple[float, float]:
    """(training seconds, valid ppl at the end) of the one run under out_dir."""
    (run_dir,) = [p.parent for p in out_dir.glob("*/metrics.csv")]
    status = json.loads((run_dir / "status.json").read_text())
    return float(status["train_seconds"]), math.exp(float(pd.read_csv(run_dir / "metrics.csv")["val_loss"].iloc[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--example", required=True, help="the word_language_model folder of pytorch/examples")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--precision", default="auto", help="picollm's --precision")
    parser.add_argument("--picollm_flags", default="", help="extra flags for picollm's run")
    args = parser.parse_args()
    print(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        data = ptb_folder(tmp)
        example = [sys.executable, str(Path(args.example).resolve() / "main.py"), "--data", str(data),
                   "--model", "LSTM", "--emsize", "200", "--nhid", "200", "--nlayers", "2", "--lr", "20",
                   "--clip", "0.25", "--epochs", str(args.epochs), "--batch_size", "20", "--bptt", "20",
                   "--dropout", "0.2", "--save", str(tmp / "model.pt")]
        ours = [sys.executable, "-m", "picollm", "train", *RECIPE, "--epochs", str(args.epochs),
                "--eval_interval", "1000000", "--precision", args.precision, "--threads", "1", "--no-progress",
                "--out_dir", str(tmp / "runs"), *shlex.split(args.picollm_flags)]
        results: dict = {}
        lanes = [threading.Thread(target=timed, args=(example, tmp, {**os.environ, "OMP_NUM_THREADS": "1"},
                                                      results, "example")),
                 threading.Thread(target=timed, args=(ours, ROOT, dict(os.environ), results, "picollm"))]
        for lane in lanes:
            lane.start()
        for lane in lanes:
            lane.join()
        for key, (_, proc) in results.items():
            if proc.returncode != 0:
                raise SystemExit(f"{key} exited {proc.returncode}:\n{proc.stderr[-2000:]}")
        ex_epoch, ex_train, ex_ppl = example_result(results["example"][1].stdout)
        our_train, our_ppl = picollm_result(tmp / "runs")
    ex_wall, our_wall = results["example"][0], results["picollm"][0]
    print(f"example  wall {ex_wall:.1f} s, epoch {ex_epoch:.1f} s (with its validation pass), training "
          f"{ex_train:.1f} s (mean ms/batch x batches), valid ppl {ex_ppl:.2f}")
    print(f"picollm  wall {our_wall:.1f} s, training {our_train:.1f} s, valid ppl {our_ppl:.2f} "
          f"(--precision {args.precision})")
    print(f"lstm_vs_example train_ratio={ex_train / our_train:.3f} wall_ratio={ex_wall / our_wall:.3f} "
          f"example_ppl={ex_ppl:.2f} picollm_ppl={our_ppl:.2f} precision={args.precision}")


if __name__ == "__main__":
    main()
