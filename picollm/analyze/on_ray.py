"""The analysis on Ray (`analyze-all --backend ray [--address HOST:PORT]`): every run is a Ray task of
`threads` CPUs on the cluster that trained the runs (or on a local Ray), under the batch's rules
(picollm.core.ray_tasks): a task whose worker dies fails its own run, after Ray's one retry, and the other
runs carry on. A task sends its run's row back instead of writing it: this process writes it into the table
of all runs (runs.sqlite) as the result arrives, once per run, so the nodes never share one SQLite file over a
network filesystem (runs.csv follows at the end, as locally). Each task's log lines are replayed into the
analysis log.

The checkpoints and the analysis folder must be on a filesystem every node shares, as for the batch.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from picollm.core.errors import PicoError
from picollm.core.ray_tasks import RayTasks
from picollm.models import families_initializer
from picollm.runs.table import upsert_rows

#: analyze_one(out_root, device, max_new_tokens, run_dir, keep_row=...) -> ('ok', seconds) or ('error', message)
Analyze = Callable[..., tuple[str, str]]


def analyze_in_task(analyze: Analyze, out_root: Path, device: str, max_new_tokens: int, threads: int,
                    run_dir: Path) -> tuple[str, str, list[dict]]:
    """One run's analysis in a Ray task of `threads` CPUs: (outcome, message, [its table row])."""
    torch.set_num_threads(threads)  # Ray reserved these CPUs; the worker may have run other tasks before
    if device.startswith("cuda"):
        device = "cuda"  # the GPU Ray gave this task (the only one it sees), whichever cuda:N was asked for
    rows: list[dict] = []
    outcome, message = analyze(out_root, device, max_new_tokens, run_dir, keep_row=rows.append)
    return outcome, message, rows


def _failed(reason: str) -> tuple[str, str, list[dict]]:
    return "error", f"{reason}; run again to retry", []


def ray_results(analyze: Analyze, todo: list[Path], out_root: Path, device: str, threads: int,
                max_new_tokens: int, in_flight: int | None) -> Iterator[tuple[Path, tuple[str, str]]]:
    """(run, result) as each run's task ends, its row already in the table; on the Ray this process has joined
    (picollm.core.ray_tasks.ray_session). analyze goes with every task (analyze_one; a test's stand-in too).
    in_flight: runs at once at most (None: as many as the cluster has CPUs for). A run on CUDA takes a GPU."""
    tasks = RayTasks(functools.partial(analyze_in_task, analyze, out_root, device, max_new_tokens, threads),
                     _failed, num_cpus=threads, num_gpus=1.0 if device.startswith("cuda") else 0.0,
                     initializer=families_initializer())
    for run_dir, (outcome, message, rows) in tasks.run(todo, limit=in_flight):
        if outcome == "ok":
            try:
                upsert_rows(out_root, rows)
            except PicoError as e:  # a full disk, ...: the run's files are written but its row is not
                outcome, message = "error", str(e)
        yield run_dir, (outcome, message)
