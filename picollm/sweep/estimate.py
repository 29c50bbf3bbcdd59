"""How long a batch will take, before it trains: time a few steps of every config (``--dry_run --estimate N``).

A FLOP count would miss what dominates small models on a CPU (kernel launch overheads, the LSTM's time
loop, memory traffic), so each config is trained for real, briefly, in a scratch folder, at the thread count
the batch would give it. Evaluations are forward passes: counted as a third of a training step per token.
"""

from __future__ import annotations

import heapq
import math
import tempfile
from pathlib import Path

from picollm.config import RunConfig

#: a forward pass costs about a third of a forward + backward pass
EVAL_COST_PER_TOKEN = 1 / 3


def seconds_per_step(cfg: RunConfig, steps: int, threads: int) -> float:
    """Measured seconds per training step of cfg: `steps` steps in a scratch folder (its data cached), timed
    from the end of the first of train_log.csv's six intervals: that one holds the warm-up (the compiled loss,
    --compile_loss, is built on the first step: seconds, which a run of thousands of steps pays once)."""
    # the trainer imports torch, which only --estimate needs (a plain dry run stays without it)
    from picollm.runs.layout import read_metrics, read_train_log
    from picollm.train.loop import train_run

    with tempfile.TemporaryDirectory(prefix="picollm-estimate-") as tmp:
        probe = cfg.replace(max_steps=steps, epochs=0.0, eval_interval=steps, eval_tokens=cfg.block_size + 1,
                            out_dir=tmp, progress=False, threads=threads, parent="",
                            log_interval=max(1, steps // 6))
        train_run(probe, quiet=True)
        log = read_train_log(Path(tmp) / probe.run_name())
        rows = read_metrics(Path(tmp) / probe.run_name())
    if log is not None and len(log) >= 2:
        first, last = log.iloc[0], log.iloc[-1]
        return float(last["elapsed_sec"] - first["elapsed_sec"]) / float(last["step"] - first["step"])
    return cfg.batch_size * cfg.block_size / float(rows["tokens_per_sec"].iloc[-1])


def run_seconds(cfg: RunConfig, total_steps: int, step_seconds: float, valid_tokens: int) -> float:
    """Training plus evaluations (one before the first step, then every eval_interval steps)."""
    evaluations = 1 + math.ceil(total_steps / cfg.eval_interval)
    tokens_per_eval = cfg.eval_tokens or valid_tokens
    tokens_per_step = cfg.batch_size * cfg.block_size
    return step_seconds * (total_steps + evaluations * tokens_per_eval * EVAL_COST_PER_TOKEN / tokens_per_step)


def batch_seconds(run_times: list[float], workers: int) -> float:
    """Wall time of runs handed out in order to `workers` parallel workers, each taking the next run when
    it is free (what the batch's pool does)."""
    free_at = [0.0] * max(1, workers)
    for seconds in run_times:
        heapq.heapreplace(free_at, free_at[0] + seconds)
    return max(free_at)


def format_duration(seconds: float) -> str:
    """'1 h 05 min', '12 min', '40 s'."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"
