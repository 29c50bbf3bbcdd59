"""The dry run (``batch_train.py --dry_run``): the configs a batch would train, their step budgets and which are
done; with ``--estimate N``, the measured time of every run still to train and of the whole batch."""

from __future__ import annotations

from pathlib import Path

from tqdm import tqdm

from picollm.config import RunConfig
from picollm.core.text import format_table
from picollm.runs.layout import FINISHED, read_status
from picollm.sweep.estimate import batch_seconds, format_duration, run_seconds, seconds_per_step
from picollm.sweep.jobs import Outcome, format_cell
from picollm.sweep.planning import total_steps_of


def print_plan(configs: list[RunConfig], out_dir: Path, description: str, estimate_steps: int = 0,
               workers: int = 1, threads: int = 1) -> list[Outcome]:
    """The dry run: a table of the configs (the settings that vary between them), each run's step budget and
    status; with estimate_steps, the measured time of every run still to train and of the whole batch."""
    dicts = [c.fingerprint_dict() for c in configs]
    keys = [k for k in dict.fromkeys(k for d in dicts for k in d) if len({repr(d.get(k)) for d in dicts}) > 1]
    keys = [k for k in keys if k not in ("model", "corpus")]
    rows, outcomes, todo_seconds = [], [], []
    timing = tqdm(total=len(configs), desc=f"timing {estimate_steps} steps of each config",
                  disable=not estimate_steps, leave=False)
    for i, (cfg, d) in enumerate(zip(configs, dicts), 1):
        status = read_status(out_dir / cfg.run_name())["status"]
        steps = total_steps_of(cfg)
        row = [str(i), cfg.run_name(), status, cfg.model] + [format_cell(d.get(k), "{}") for k in keys] + [str(steps)]
        if estimate_steps:
            seconds = estimate_run_seconds(cfg, steps, estimate_steps, threads)
            row.append(format_duration(seconds))
            if status not in FINISHED:
                todo_seconds.append(seconds)
            timing.update(1)
        rows.append(row)
        outcomes.append(Outcome(run=cfg.run_name(), fingerprint=cfg.fingerprint(), run_dir=str(out_dir / cfg.run_name()),
                                stage="dry_run", outcome="skipped" if status in FINISHED else "planned",
                                reason=status))
    timing.close()
    print(description)
    print(format_table(["#", "run", "status", "model"] + keys + ["steps"] + (["time"] if estimate_steps else []),
                       rows))
    n_done = sum(o.outcome == "skipped" for o in outcomes)
    print(f"{len(configs)} configs: {n_done} finished (would be skipped), {len(configs) - n_done} to train "
          f"in {out_dir}/ (dry run: nothing trained)")
    if estimate_steps:
        print(f"estimated wall time: {format_duration(batch_seconds(todo_seconds, workers))} with {workers} "
              f"workers x {threads} threads ({format_duration(sum(todo_seconds))} of run time; timed "
              f"{estimate_steps} steps of each config now, on this machine, as loaded as it is now)")
    return outcomes


def estimate_run_seconds(cfg: RunConfig, steps: int, estimate_steps: int, threads: int) -> float:
    """A run's wall time: its step budget at the measured seconds per step, plus its evaluations."""
    from picollm.data.batching import prepare_data  # torch: only --estimate needs it

    r = cfg.resolved()
    valid_tokens = len(prepare_data(cfg.corpus, r.tokenizer, r.bpe_vocab_size)[1]["valid"])
    step_seconds = seconds_per_step(cfg, min(estimate_steps, steps), threads)
    return run_seconds(cfg, steps, step_seconds, valid_tokens)
