"""Train a search space of runs: presets or your own space file; resumable, deduplicated, parallel.

    picollm batch --preset fast --workers 2
    picollm batch --preset xlstm-ptb-grid --dry_run
    picollm batch --preset pico --sampler halving --n_runs 27 --seed 1
    picollm batch --space my_space.yaml --max_steps 200 --lr 3e-3
    picollm batch --preset pico --device cuda --runs_per_gpu 4
    picollm batch --preset pico --backend ray --address head-node:6379 --gpus_per_run 0.25

Run the same command again after an interruption: finished runs are skipped, interrupted ones resume.
Presets and the space-file format are described in picollm/sweep/space.py; execution in picollm/sweep/batch.py.
(`python batch_train.py ...` is the same command.)
"""

from __future__ import annotations

import argparse

from picollm.core.commands import ArgumentParser
from picollm.sweep.batch import add_batch_args, train_batch_from_args


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_batch_args(parser)
    return train_batch_from_args(parser.parse_args(argv)).exit_code
