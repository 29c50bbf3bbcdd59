"""Analysis of trained runs: one run in depth, and the table of all runs.

analyze_run(run_dir) writes analysis_runs/<run>/:
    generations.csv / .jsonl   greedy, top-p and beam continuations of a fixed prompt set per corpus, from the
                               best and the last checkpoint, each token annotated (log-prob, top-5 alternatives,
                               embedding neighbours)
    metrics_curve.png          the training curves of metrics.csv
    summary.json               full config, status, final metrics, test evaluation (written last: its presence
                               means the analysis is complete)

analyze_all(checkpoints_dir) analyses every run in parallel (picollm.core.pool's worker processes, or Ray tasks:
picollm.analyze.on_ray) and keeps one row per run in analysis_runs/runs.csv (picollm.runs.table owns that file):
each worker adds its row as soon as its run is done (on Ray, this process adds it as the result arrives).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from tqdm.auto import tqdm

from picollm.analyze import on_ray
from picollm.analyze.generate import (
    DecodeConfig,
    annotate,
    compact_annotation,
    continuation_text,
    distinct_n,
    encode_prompt,
    generate,
)
from picollm.core import resources
from picollm.core.atomic import atomic_write, atomic_write_json, atomic_write_text
from picollm.core.devices import resolve_device
from picollm.core.errors import CheckpointError, PicoError
from picollm.core.log import get_logger
from picollm.core.pool import Slot, WorkerPool
from picollm.core.ray_tasks import check_backend, ray_session
from picollm.core.resources import cpu_cores, threads_per_process
from picollm.data.batching import prepare_data
from picollm.data.corpora import corpus_identity, load_splits
from picollm.models import families_initializer
from picollm.runs.checkpoint import load_run
from picollm.runs.layout import read_json, read_metrics, read_status, read_train_log
from picollm.runs.portable import require_corpus
from picollm.runs.table import (
    BUCKETS,
    CONFIG_COLUMNS,
    TABLE_COLUMNS,
    TABLE_NAME,
    export_table,
    read_table,
    upsert_rows,
)
from picollm.train.evaluate import perplexity, token_losses

log = get_logger()

#: a fixed prompt set per corpus, so generations are comparable across runs
PROMPTS: dict[str, list[str]] = {
    "tinyshakespeare": ["ROMEO:", "To be or not", "First Citizen:\n"],
    "ptb": ["the company said", "in the first quarter", "the market"],
    "wikitext2": ["The game", "In 2009 ,", "The city of"],
    "tinystories": ["Once upon a time", "One day, a little girl named", "The dog"],
}
#: the decoding strategies every checkpoint is shown under
STRATEGIES: dict[str, dict[str, Any]] = {
    "greedy": dict(temperature=0.0),
    "top_p": dict(temperature=0.8, top_p=0.95, seed=1234),
    "beam": dict(beam=4, length_penalty=1.0),
}
#: training-frequency buckets of the target token: rare < 100 <= medium <= 1000 < frequent (names: BUCKETS)
RARE_BELOW, FREQUENT_ABOVE = 100, 1000

GENERATION_COLUMNS = ["run", "checkpoint", "step", "strategy", "decoding_params", "prompt", "text", "annotation",
                      "mean_logprob", "distinct_1", "distinct_2"]
RUN_FILES = ("config.json", "status.json", "tokenizer.json", "metrics.csv", "best.pt", "last.pt")


# --------------------------------------------------------------------------------------------------
# prompts and generations
# --------------------------------------------------------------------------------------------------
def prompts_for(corpus: str, test_text: str = "", n: int = 3) -> list[str]:
    """The corpus's fixed prompts; for a local file, the first three words of n lines spread over its test split."""
    if corpus in PROMPTS:
        return PROMPTS[corpus]
    lines = [line for line in test_text.splitlines() if line.split()]
    if not lines:
        return ["The"]
    picks = [lines[i * len(lines) // n] for i in range(min(n, len(lines)))]
    return list(dict.fromkeys(" ".join(line.split()[:3]) for line in picks))


def generation_rows(run: str, which: str, step: int, model, tokenizer, prompts: list[str],
                    max_new_tokens: int) -> list[dict[str, Any]]:
    """One record per (strategy, prompt): the continuation, its annotation (a list) and its statistics."""
    strings = tokenizer.token_strings()
    ids = [encode_prompt(tokenizer, p) for p in prompts]
    rows = []
    for strategy, settings in STRATEGIES.items():
        cfg = DecodeConfig(max_new_tokens=max_new_tokens, **settings)
        for prompt, gen in zip(prompts, generate(model, ids, cfg, tokenizer.eos_id)):
            rows.append({"run": run, "checkpoint": which, "step": step, "strategy": strategy,
                         "decoding_params": json.dumps(cfg.params(), sort_keys=True), "prompt": prompt,
                         "text": continuation_text(tokenizer, gen), "annotation": annotate(gen, model, strings),
                         "mean_logprob": gen.mean_logprob, "distinct_1": distinct_n(gen.ids, 1),
                         "distinct_2": distinct_n(gen.ids, 2), "prompt_ids": gen.prompt_ids, "ids": gen.ids})
    return rows


def write_generations(out_dir: Path, rows: list[dict[str, Any]]) -> None:
    """generations.jsonl (annotation as JSON, token ids kept) and generations.csv (annotation compacted)."""
    atomic_write_text(out_dir / "generations.jsonl",
                      "".join(json.dumps(r, ensure_ascii=False, allow_nan=True) + "\n" for r in rows))
    table = pd.DataFrame([{**r, "annotation": compact_annotation(r["annotation"])} for r in rows],
                         columns=GENERATION_COLUMNS)
    atomic_write_text(out_dir / "generations.csv", table.to_csv(index=False))


# --------------------------------------------------------------------------------------------------
# test evaluation
# --------------------------------------------------------------------------------------------------
def frequency_buckets(train_ids: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """(V,) bucket index per token (0 rare, 1 medium, 2 frequent) from its count in the train split."""
    counts = torch.bincount(train_ids, minlength=vocab_size)
    return (counts >= RARE_BELOW).long() + (counts > FREQUENT_ABOVE).long()


def test_metrics(model, train_ids: torch.Tensor, test_ids: torch.Tensor, vocab_size: int, batch_size: int,
                 block_size: int, device: torch.device) -> dict[str, float]:
    """Loss, perplexity and accuracy on the whole test split, and perplexity per training-frequency bucket."""

    targets, losses, correct = token_losses(model, test_ids, batch_size, block_size, device)
    losses = losses.double()
    loss = losses.mean().item()
    out: dict[str, float] = {"test_loss": loss, "test_ppl": perplexity(loss),
                             "test_acc": correct.double().mean().item(), "test_tokens": len(losses)}
    bucket = frequency_buckets(train_ids, vocab_size)[targets]  # (N,) bucket of every target
    for i, name in enumerate(BUCKETS):
        mask = bucket == i
        n = int(mask.sum())
        out[f"test_ppl_{name}"] = perplexity(losses[mask].mean().item()) if n else math.nan
        out[f"test_tokens_{name}"] = n
    return out


_SPLITS: dict[tuple, dict[str, torch.Tensor]] = {}


def _encoded_splits(corpus: str, tokenizer) -> dict[str, torch.Tensor]:
    """The corpus's splits encoded with the run's tokenizer; memoised, since a worker sees many runs of one corpus."""

    key = (corpus_identity(corpus), hashlib.sha256(json.dumps(tokenizer.to_dict()).encode()).hexdigest())
    if key not in _SPLITS:
        if len(_SPLITS) >= 4:
            _SPLITS.pop(next(iter(_SPLITS)))
        _SPLITS[key] = prepare_data(corpus, tokenizer.kind, tokenizer=tokenizer)[1]
    return _SPLITS[key]


# --------------------------------------------------------------------------------------------------
# curves
# --------------------------------------------------------------------------------------------------
def _log_every(train_log: pd.DataFrame) -> int:
    steps = train_log["step"].diff().dropna()
    return int(steps.mode().iloc[0]) if len(steps) else 1


def validation_series(metrics: pd.DataFrame) -> list[tuple[str, str, pd.DataFrame]]:
    """The validation loss curves: (column, label, frame). A run with --ema has two, its weights' moving average
    (what it evaluates and keeps) and the trained weights' own loss (val_loss_raw): the average's gain."""
    if "val_loss_raw" not in metrics.columns:
        return [("val_loss", "validation", metrics)]
    return [("val_loss", "validation (moving average of the weights)", metrics),
            ("val_loss_raw", "validation (trained weights)", metrics)]


def plot_metrics(metrics: pd.DataFrame, path: Path, title: str, train_log: pd.DataFrame | None = None) -> None:
    """metrics_curve.png: loss, perplexity, accuracy, learning rate, gradient and weight norms against step.

    With the run's train_log.csv, the training loss and the learning rate are drawn every log_interval steps
    (the warmup and the decay as they were), not only at the evaluations."""
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend, safe in workers

    trained = metrics[metrics["step"] > 0]
    if train_log is not None:
        fine_loss = ("train_loss", f"train (mean of every {_log_every(train_log)} steps)", train_log)
        fine_lr = ("learning_rate", "lr", train_log)
    else:
        fine_loss = ("avg_loss", "train (mean since last eval)", trained)
        fine_lr = ("learning_rate", "lr", metrics)
    fig = Figure(figsize=(15, 8.5))
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.07, top=0.9, wspace=0.3, hspace=0.35)  # cheaper than
    axes = fig.subplots(2, 3).flatten()  # a layout engine, which measures every label
    panels = [
        ("Loss", "cross-entropy (nats / token)", [fine_loss, *validation_series(metrics)], "linear"),
        ("Validation perplexity", "perplexity (exp of nats / token)", [("perplexity", "validation", metrics)], "log"),
        ("Next-token accuracy", "accuracy (fraction of tokens)", [("token_accuracy", "validation", metrics)], "linear"),
        ("Learning rate", "learning rate (per step)", [fine_lr], "linear"),
        ("Gradient norm", "global L2 norm of gradients", [("grad_norm_preclip", "before clipping", trained),
                                                         ("grad_norm_postclip", "after clipping", trained)], "log"),
        ("Weight norm", "global L2 norm of parameters", [("weight_norm", "all parameters", metrics)], "linear"),
    ]
    for ax, (name, ylabel, series, scale) in zip(axes, panels):
        for column, label, frame in series:
            values = pd.to_numeric(frame[column], errors="coerce")
            ax.plot(frame["step"], values, marker="o" if frame is not train_log else None, markersize=3, label=label)
        ax.set_title(name)
        ax.set_xlabel("optimisation step")
        ax.set_ylabel(ylabel)
        if scale == "log" and (pd.to_numeric(trained[series[0][0]], errors="coerce") > 0).any():
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        if len(series) > 1:
            ax.legend()
    fig.suptitle(title)
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=90))


# --------------------------------------------------------------------------------------------------
# one run
# --------------------------------------------------------------------------------------------------
def _num(x: Any) -> float:
    return float(x) if x is not None and pd.notna(x) else math.nan


def table_row(run_dir: Path, config: dict, status: dict, metrics: pd.DataFrame, best_step: int,
                test: dict[str, float], analyzed_at: str) -> dict[str, Any]:
    """The run's row of runs.csv (TABLE_COLUMNS)."""
    trained = metrics[metrics["step"] > 0]
    at_best = metrics[metrics["step"] == best_step]
    best = at_best.iloc[-1] if len(at_best) else pd.Series(dtype=float)
    last = metrics.iloc[-1]
    row: dict[str, Any] = {"run": run_dir.name, "run_dir": str(run_dir), "fingerprint": config.get("fingerprint"),
                           "model": config.get("model")}
    row.update({name: config.get(name) for name in CONFIG_COLUMNS})
    row["precision"] = config.get("precision_used", config.get("precision"))  # what it trained in, not "auto"
    train_seconds = status.get("train_seconds")
    row.update(learning_rate=config.get("lr"), params=config.get("num_params"), vocab_size=config.get("vocab_size"),
               status=status.get("status"), status_reason=status.get("reason", ""), steps=int(last["step"]),
               train_seconds=_num(train_seconds if train_seconds is not None else last.get("elapsed_sec")),
               tokens_per_sec=_num(trained["tokens_per_sec"].mean()) if len(trained) else math.nan,
               initial_val_loss=_num(metrics["val_loss"].iloc[0]),
               final_train_loss=_num(trained["avg_loss"].iloc[-1]) if len(trained) else math.nan,
               final_val_loss=_num(last["val_loss"]), val_loss=_num(best.get("val_loss")),
               val_ppl=_num(best.get("perplexity")), token_accuracy=_num(best.get("token_accuracy")),
               best_step=best_step)
    row.update({k: v for k, v in test.items() if k in TABLE_COLUMNS})
    row["analyzed_at"] = analyzed_at
    return {c: row.get(c) for c in TABLE_COLUMNS}


def analyze_run(run_dir: str | Path, out_root: str | Path = "analysis_runs", device: str = "cpu",
                max_new_tokens: int = DecodeConfig.max_new_tokens, prompts: list[str] | None = None) -> dict[str, Any]:
    """Analyse one run into out_root/<run>/ and return its summary (the content of summary.json).

    The summary holds the full config, the status, the final and best metrics, the test evaluation and
    `row`, the run's runs.csv row. A missing or corrupt file raises a one-line CheckpointError.
    """

    start = time.perf_counter()
    DecodeConfig(max_new_tokens=max_new_tokens)  # a bad setting fails before anything is written
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"run directory {run_dir} does not exist; list runs with `ls checkpoints/`")
    dev = resolve_device(device)
    config = read_json(run_dir / "config.json")
    status = read_status(run_dir)
    if status["status"] == "corrupt":  # what the run's row would say of it is unknown
        raise CheckpointError(status["reason"])
    metrics = read_metrics(run_dir)
    cfg, tokenizer, model, best_ckpt = load_run(run_dir, "best", device=str(dev))
    require_corpus(run_dir, cfg)
    splits = _encoded_splits(cfg.corpus, tokenizer)
    test = test_metrics(model, splits["train"], splits["test"], tokenizer.vocab_size, cfg.batch_size,
                        cfg.block_size, dev)
    if prompts is None:
        prompts = prompts_for(cfg.corpus, "" if cfg.corpus in PROMPTS else load_splits(cfg.corpus)["test"])

    out_dir = Path(out_root) / run_dir.name
    out_dir.mkdir(parents=True, exist_ok=True)
    checkpoints = {"best": int(best_ckpt["step"])}
    rows = generation_rows(run_dir.name, "best", checkpoints["best"], model, tokenizer, prompts, max_new_tokens)
    if (run_dir / "last.pt").exists():
        _, _, last_model, last_ckpt = load_run(run_dir, "last", device=str(dev))
        checkpoints["last"] = int(last_ckpt["step"])
        rows += generation_rows(run_dir.name, "last", checkpoints["last"], last_model, tokenizer, prompts,
                                max_new_tokens)
    else:
        log.warning(f"{run_dir.name}: no last.pt; generations from best.pt only")
    write_generations(out_dir, rows)
    plot_metrics(metrics, out_dir / "metrics_curve.png", f"{run_dir.name} ({config.get('num_params', '?')} params)",
                 read_train_log(run_dir))

    analyzed_at = time.strftime("%Y-%m-%dT%H:%M:%S")
    row = table_row(run_dir, config, status, metrics, checkpoints["best"], test, analyzed_at)
    at_best = metrics[metrics["step"] == checkpoints["best"]]
    summary = {"run": run_dir.name, "run_dir": str(run_dir), "analyzed_at": analyzed_at, "config": config,
               "status": status, "checkpoints": checkpoints,
               "final_metrics": metrics.iloc[-1].to_dict(),
               "best_metrics": at_best.iloc[-1].to_dict() if len(at_best) else {},
               "test": test, "prompts": prompts, "generations": len(rows),
               "analysis_seconds": time.perf_counter() - start, "row": row}
    atomic_write_json(out_dir / "summary.json", summary)  # last: its presence marks a complete analysis
    return summary


def candidate_runs(checkpoints_dir: Path) -> list[Path]:
    """Every directory under checkpoints_dir holding any run file (so half-written runs get reported), by name."""
    return sorted(p for p in checkpoints_dir.iterdir() if p.is_dir() and any((p / f).exists() for f in RUN_FILES))


def skip_reason(run_dir: Path) -> str | None:
    """Why an unfinished run cannot be analysed yet (no best.pt and not done), else None."""
    if (run_dir / "best.pt").exists():
        return None
    status = read_status(run_dir)
    if status.get("status") in ("new", "running", "paused", "failed", "stopped", "diverged", "interrupted"):
        return f"no best.pt yet (status {status['status']}: {status.get('reason', '')})".replace(": )", ")")
    return None  # a 'done' run without best.pt is broken: analyze_run reports it


def is_up_to_date(run_dir: Path, out_root: Path) -> bool:
    """The analysis (summary.json) is newer than the run's checkpoints."""
    summary = out_root / run_dir.name / "summary.json"
    if not summary.exists():
        return False
    checkpoints = [run_dir / f for f in ("best.pt", "last.pt") if (run_dir / f).exists()]
    return all(summary.stat().st_mtime > c.stat().st_mtime for c in checkpoints)


def _summary_row(path: Path) -> dict[str, Any] | None:
    """The table row kept in an analysis's summary.json, or None (with a warning) when the file is damaged: the
    run is then analysed again, which writes it anew."""
    try:
        row = read_json(path, fix="analysing the run again").get("row")
    except CheckpointError as e:
        log.warning(f"warning: {e}")
        return None
    if not isinstance(row, dict):
        log.warning(f"warning: {path} has no table row; analysing the run again")
        return None
    return row


def analyze_one(out_root: Path, device: str, max_new_tokens: int, run_dir: Path,
                keep_row: Callable[[dict], None] | None = None) -> tuple[str, str]:
    """Analyse one run and add its row to the table (or hand it to keep_row: a Ray task sends it back):
    ('ok', seconds) or ('error', message); never raises."""
    start = time.perf_counter()
    try:
        summary = analyze_run(run_dir, out_root, device=device, max_new_tokens=max_new_tokens)
        if keep_row:
            keep_row(summary["row"])
        else:
            upsert_rows(out_root, [summary["row"]])
    except PicoError as e:
        return "error", str(e)
    except Exception as e:  # a bug in one run's analysis must not stop the others
        tb = traceback.format_exc(limit=-3).strip().splitlines()
        return "error", f"{e.__class__.__name__}: {e} ({' | '.join(tb[-3:-1])})"
    return "ok", f"{time.perf_counter() - start:.1f}s"


def _analyze_in_slot(out_root: Path, device: str, max_new_tokens: int, run_dir: Path, slot: Slot) -> tuple[str, str]:
    """analyze_one in a picollm.core.pool worker (the pool has set its torch threads)."""
    return analyze_one(out_root, device, max_new_tokens, run_dir)


def _analysis_results(todo: list[Path], n_jobs: int, out_root: Path, device: str, threads: int,
                      max_new_tokens: int, job, backend: str = "local") -> Iterator[tuple[Path, tuple[str, str]]]:
    """(run, result) as each analysis ends: in this process for one worker (no start-up cost, and tests can
    patch it), else on worker processes or Ray tasks (n_jobs at once), where a dead worker fails its run only."""

    if backend == "ray":  # analyze_one is looked up now, so a test's stand-in goes with the tasks
        yield from on_ray.ray_results(analyze_one, todo, out_root, device, threads or 1, max_new_tokens, n_jobs)
        return
    if n_jobs == 1:
        for run_dir in todo:
            torch.set_num_threads(threads or threads_per_process(1, job))  # sized as each run starts
            yield run_dir, analyze_one(out_root, device, max_new_tokens, run_dir)
        return
    pool = WorkerPool(n_jobs, functools.partial(_analyze_in_slot, out_root, device, max_new_tokens),
                      lambda reason: ("error", f"{reason}; run again to retry"), threads, job=job,
                      preload=("picollm.analyze.analysis",), initializer=families_initializer())
    try:
        yield from pool.run(todo)
    finally:
        pool.close()


def available_cores() -> int:
    """The cores this process may use (picollm.core.resources.cpu_cores, the one definition)."""

    return cpu_cores()


def analyze_all(checkpoints_dir: str | Path = "checkpoints", out_root: str | Path = "analysis_runs",
                workers: int | None = None, skip_existing: bool = True, device: str = "cpu",
                max_new_tokens: int = DecodeConfig.max_new_tokens, threads: int = 0, backend: str = "local",
                address: str | None = None) -> pd.DataFrame:
    """Analyse every run under checkpoints_dir into out_root; return runs.csv as a DataFrame.

    skip_existing skips runs whose summary.json is newer than their checkpoints (re-adding their row if the
    table lost it). Unfinished runs are skipped with a reason; a failing run is logged and does not stop the
    others. On the CPU, workers are capped at the cores (with a logged note). threads: torch threads per
    worker; 0 sizes them as each run starts, to cores // (workers + the busy processes of the other picollm
    jobs running then, picollm/core/resources.py), so jobs started side by side do not oversubscribe the CPU.
    df.attrs["tally"] = {"analyzed": [...], "up_to_date": [...], "skipped": {run: reason}, "failed": {run: error}}.

    workers: None is 1 locally. backend "ray": every run is a Ray task of `threads` CPUs (0: 1) on the cluster at
    `address` (HOST:PORT; None: a local Ray on this machine's cores), at most `workers` at once (None: as many as
    the cluster has CPUs for); the checkpoints and out_root must be on a filesystem its nodes share.
    """

    DecodeConfig(max_new_tokens=max_new_tokens)  # a bad setting fails before anything is written
    check_backend(backend, address)
    checkpoints_dir, out_root = Path(checkpoints_dir), Path(out_root)
    if not checkpoints_dir.is_dir():
        raise CheckpointError(f"checkpoints directory {checkpoints_dir} does not exist; train runs first or pass "
                              "--checkpoints DIR")
    if (workers is not None and workers < 1) or threads < 0:
        raise PicoError(f"--workers must be >= 1 and --threads >= 0; got {workers} and {threads}")
    # Ray is joined before anything is written: a cluster this machine cannot join is a user mistake
    with ray_session(address, resources.cpu_cores()) if backend == "ray" else contextlib.nullcontext():
        return _analyze_runs(checkpoints_dir, out_root, workers, skip_existing, device, max_new_tokens, threads,
                             backend, address)


def _analyze_runs(checkpoints_dir: Path, out_root: Path, workers: int | None, skip_existing: bool, device: str,
                  max_new_tokens: int, threads: int, backend: str, address: str | None) -> pd.DataFrame:
    """analyze_all once its settings are checked (and Ray joined)."""
    table_path = out_root / TABLE_NAME
    tally: dict[str, Any] = {"analyzed": [], "up_to_date": [], "skipped": {}, "failed": {}}
    todo: list[Path] = []
    restore: list[dict] = []
    in_table = set(read_table(table_path)["run"])
    for run_dir in candidate_runs(checkpoints_dir):
        reason = skip_reason(run_dir)
        if reason:
            tally["skipped"][run_dir.name] = reason
            log.info(f"{run_dir.name}: skipped, {reason}")
        elif skip_existing and is_up_to_date(run_dir, out_root) and (
                run_dir.name in in_table or (row := _summary_row(out_root / run_dir.name / "summary.json"))):
            tally["up_to_date"].append(run_dir.name)
            if run_dir.name not in in_table:
                restore.append(row)
        else:
            todo.append(run_dir)
    upsert_rows(out_root, restore)  # also creates the database (importing an older csv) before workers start
    n_jobs = max(1, min(workers or (1 if backend == "local" else len(todo)), len(todo)))
    here = backend == "local" or not address  # a cluster's tasks run on its nodes, not on this CPU
    if here and device.startswith("cpu") and n_jobs > resources.cpu_cores():
        n_jobs, note = resources.cap_workers(workers or n_jobs)
        if workers:
            log.warning(note)
    how = (f"{n_jobs} worker(s)" if backend == "local"
           else f"Ray tasks of {threads or 1} CPU(s), {n_jobs} at most at once")
    log.info(f"analysing {len(todo)} run(s) with {how}; {len(tally['up_to_date'])} up to date, "
             f"{len(tally['skipped'])} skipped")

    if todo:
        previous_threads = torch.get_num_threads()
        with resources.registered("analyze", n_jobs) if here else contextlib.nullcontext() as job:
            results = _analysis_results(todo, n_jobs, out_root, device, threads, max_new_tokens, job, backend)
            try:
                for run_dir, (outcome, message) in tqdm(results, total=len(todo), desc="analyze",
                                                        dynamic_ncols=True):
                    if outcome == "ok":
                        tally["analyzed"].append(run_dir.name)
                        log.info(f"{run_dir.name}: analysed ({message})")
                    else:
                        tally["failed"][run_dir.name] = message
                        log.error(f"{run_dir.name}: FAILED: {message}")
            finally:
                torch.set_num_threads(previous_threads)

    log.info(f"analysis: {len(tally['analyzed'])} analysed, {len(tally['up_to_date'])} up to date, "
             f"{len(tally['skipped'])} skipped (unfinished), {len(tally['failed'])} failed"
             + (f" ({', '.join(sorted(tally['failed']))})" if tally["failed"] else "") + f"; table {table_path}")
    export_table(out_root)
    table = read_table(table_path)
    table.attrs["tally"] = tally
    return table
