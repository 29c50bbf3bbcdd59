#!/usr/bin/env python
"""Train a search space of runs: presets or your own space file; resumable, deduplicated, parallel.

    python batch_train.py --preset fast --workers 2
    python batch_train.py --preset xlstm-ptb-grid --dry_run
    python batch_train.py --preset pico --sampler halving --n_runs 27 --seed 1
    python batch_train.py --space my_space.yaml --max_steps 200 --lr 3e-3
    python batch_train.py --preset pico --device cuda --runs_per_gpu 4
    python batch_train.py --preset pico --backend ray --address head-node:6379 --gpus_per_run 0.25

Run the same command again after an interruption: finished runs are skipped, interrupted ones resume.
Presets and the space-file format are described in picollm/search.py; execution in picollm/batch.py.
"""

from __future__ import annotations

import argparse

from picollm.core.commands import ArgumentParser, run_cli
from picollm.sweep.batch import add_batch_args, train_batch_from_args


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_batch_args(parser)
    return train_batch_from_args(parser.parse_args(argv)).exit_code


if __name__ == "__main__":
    run_cli(main)
