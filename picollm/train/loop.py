"""train_run(cfg) -> run_dir: the one function every backend (main.py, local workers, Ray) calls.

A run is idempotent and resumable. Its directory is named by the config's fingerprint; a finished run
is returned untouched; an interrupted one restarts from last.pt (weights, optimizer, plateau state, RNG,
the carried recurrent state and the metric rows so far) and ends with the same metrics as if it had never
stopped. Checkpoints are written only at evaluation points, where the running train-loss accumulator is
empty, so nothing else needs saving.
"""

from __future__ import annotations

import contextlib
import math
import platform
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel
from tqdm.auto import tqdm

from picollm.config import RunConfig
from picollm.core.atomic import atomic_write_json
from picollm.core.devices import (
    autocast_context,
    cpu_has_bf16,
    legacy_precision,
    resolve_device,
    resolve_precision,
    seed_everything,
)
from picollm.core.errors import CheckpointError, ConfigError, DiskFullError, PicoError
from picollm.core.log import get_logger
from picollm.core.version import __version__
from picollm.data import batching as data_mod
from picollm.data.tokenizers import Tokenizer, load_tokenizer
from picollm.models import build_model
from picollm.models.base import LanguageModel, State, detach_state, map_state
from picollm.runs.checkpoint import LAST_KEYS, checkpoint_path, load_checkpoint, write_best, write_last
from picollm.runs.events import write_run_events
from picollm.runs.layout import (
    FINISHED,
    INTERRUPTED_REASON,
    mark_stopped_training,
    read_status,
    save_status,
    status_record,
    write_metrics,
    write_status,
    write_train_log,
)
from picollm.train.averaging import make_average
from picollm.train.evaluate import evaluate
from picollm.train.loss import TrainingLoss, wants_compiled_loss
from picollm.train.optimizers import Optimizers, make_optimizer
from picollm.train.schedule import DropoutWarmup, Schedule

log = get_logger()
#: step s of a run with seed n draws its random windows from seed n * SEED_STRIDE + s: distinct for every
#: (seed, step) pair below a million steps, and below 2**63 for every allowed seed
SEED_STRIDE = 1_000_003
#: on a GPU, checking the loss for NaN forces a device sync: check every this many steps (and at evaluations)
GPU_FINITE_CHECK_EVERY = 25


def library_versions() -> dict[str, str]:
    import tokenizers  # the BPE library: loaded only where a BPE tokenizer is trained or read, and here

    return {"picollm": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "tokenizers": tokenizers.__version__, "python": platform.python_version()}


def grad_stats(model: torch.nn.Module) -> tuple[float, float]:
    """(global L2 norm, max |grad|) of the current gradients."""
    grads = [p.grad.detach() for p in model.parameters() if p.grad is not None]
    if not grads:
        return 0.0, 0.0
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads])).item()
    max_abs = max(g.abs().max().item() for g in grads)
    return norm, max_abs


def weight_norm(model: torch.nn.Module) -> float:
    return torch.linalg.vector_norm(torch.stack([p.detach().float().norm() for p in model.parameters()])).item()


def steps_per_epoch(cfg: RunConfig, train_tokens: int) -> int:
    if cfg.resolved().batching == "stream":
        return max(1, (train_tokens // cfg.batch_size - 1 + cfg.block_size - 1) // cfg.block_size)
    return max(1, train_tokens // (cfg.batch_size * cfg.block_size))


def total_steps(cfg: RunConfig, train_tokens: int) -> int:
    if cfg.epochs > 0:
        return max(1, math.ceil(cfg.epochs * steps_per_epoch(cfg, train_tokens)))
    return cfg.max_steps


# --------------------------------------------------------------------------------------------------
# the state of a run
# --------------------------------------------------------------------------------------------------
@dataclass
class TrainState:
    """Counters that a resumed run needs to continue exactly (besides weights, optimizer and schedule)."""

    step: int = 0
    tokens_seen: int = 0
    elapsed: float = 0.0
    best_val: float = math.inf
    best_step: int = -1
    bad_evals: int = 0


@dataclass
class Run:
    """Everything one training session works with."""

    cfg: RunConfig
    run_dir: Path
    device: torch.device
    model: LanguageModel
    optimizer: torch.optim.Optimizer | Optimizers
    schedule: Schedule
    train_tokens: int
    precision: str
    """fp32 or bf16 (autocast): --precision made concrete, or the one the run was started with"""
    loss: TrainingLoss
    """the training loss, compiled or eager: --compile_loss made concrete, or what the run was started with"""
    ts: TrainState = field(default_factory=TrainState)
    rows: list[dict] = field(default_factory=list)
    """metric rows so far, one per evaluation (step 0: the untrained model)"""
    carry: State = None
    """recurrent state carried from one stream segment to the next"""
    log_rows: list[dict] = field(default_factory=list)
    """train_log.csv so far: the mean training loss every log_interval steps"""
    average: AveragedModel | None = None
    """the moving average of the weights (--ema), or None"""

    @property
    def evaluated_model(self) -> LanguageModel:
        """The weights evaluations score and best.pt keeps: the moving average when the run keeps one."""
        return self.average.module if self.average is not None else self.model

    @property
    def max_steps(self) -> int:
        return self.schedule.max_steps

    def checkpoint(self) -> dict[str, Any]:
        """The parts of last.pt (runs.checkpoint.write_last): what resuming needs to continue exactly here."""
        rng = {"torch": torch.get_rng_state(),
               "cuda": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None}
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "train_state": {**vars(self.ts), **self.schedule.state_dict(), "precision": self.precision,
                                "compiled_loss": self.loss.compiled},
                "metrics": self.rows,
                "train_log": self.log_rows,
                "carry_state": map_state(lambda t: t.detach().cpu(), self.carry), "rng": rng, "step": self.ts.step,
                "fingerprint": self.cfg.fingerprint(),
                "average": self.average.state_dict() if self.average is not None else None}

    def restore(self, ckpt: dict[str, Any]) -> None:
        """Continue from a last.pt read by runs.checkpoint.load_checkpoint (so in the current format)."""
        if ckpt["fingerprint"] != self.cfg.fingerprint():
            raise CheckpointError(f"{self.run_dir / 'last.pt'} belongs to another config; move {self.run_dir} "
                                  "away and retrain")
        self.model.load_state_dict(ckpt["model"])
        if self.average is not None:
            self.average.load_state_dict(ckpt["average"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        names = {f.name for f in fields(TrainState)}
        self.ts = TrainState(**{k: v for k, v in ckpt["train_state"].items() if k in names})
        self.schedule.load_state_dict(ckpt["train_state"])
        self.rows = list(ckpt["metrics"])
        self.log_rows = list(ckpt["train_log"])
        self.carry = map_state(lambda t: t.to(self.device), ckpt["carry_state"])
        torch.set_rng_state(ckpt["rng"]["torch"].cpu())
        if self.device.type == "cuda" and ckpt["rng"]["cuda"] is not None:
            torch.cuda.set_rng_state(ckpt["rng"]["cuda"].cpu(), self.device)


class Batches:
    """The training batch of each step: a segment of contiguous streams, whose recurrent state the model
    carries from one segment to the next (a new pass over the data starts from an empty state), or
    random windows drawn from a generator seeded by (seed, step), so a resumed run draws the same ones."""

    def __init__(self, cfg: RunConfig, train_data: torch.Tensor, device: torch.device) -> None:
        self.cfg = cfg
        self.stream = cfg.resolved().batching == "stream"
        if self.stream:
            self.streams = data_mod.batchify(train_data, cfg.batch_size).to(device)
            self.n_segments = data_mod.num_segments(self.streams, cfg.block_size)
        else:
            self.data = train_data.to(device)

    def __call__(self, run: Run) -> tuple[torch.Tensor, torch.Tensor]:
        step = run.ts.step
        if self.stream:
            segment = step % self.n_segments
            if segment == 0:
                run.carry = None
            return data_mod.stream_segment(self.streams, segment, self.cfg.block_size)
        gen = torch.Generator().manual_seed(self.cfg.seed * SEED_STRIDE + step)
        return data_mod.random_windows(self.data, self.cfg.batch_size, self.cfg.block_size, gen)


# --------------------------------------------------------------------------------------------------
# the run directory's files
# --------------------------------------------------------------------------------------------------
def write_config(run_dir: Path, cfg: RunConfig, extra: dict[str, Any]) -> None:
    record = cfg.resolved().to_dict()
    record.update(fingerprint=cfg.fingerprint(), run_name=cfg.run_name(), versions=library_versions(), **extra)
    atomic_write_json(run_dir / "config.json", record)


def save_checkpoint(run: Run) -> None:
    """last.pt, then metrics.csv and status.json: after a crash between them, resume rewrites the metrics
    from last.pt, so the two never disagree."""
    write_last(run.run_dir, **run.checkpoint())
    write_metrics(run.run_dir, run.rows)
    write_train_log(run.run_dir, run.log_rows)
    write_status(run.run_dir, "running", "training", step=run.ts.step, max_steps=run.max_steps)


def save_best(run: Run, val_loss: float) -> None:
    write_best(run.run_dir, model=run.evaluated_model.state_dict(), step=run.ts.step, val_loss=val_loss,
               fingerprint=run.cfg.fingerprint())


# --------------------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------------------
def train_run(cfg: RunConfig, *, quiet: bool = False, stop_at_step: int | None = None,
              on_evaluation: Callable[[int, float], str | None] | None = None) -> Path:
    """Train the run described by cfg (or resume / skip it) and return its directory.

    stop_at_step pauses the run after that many steps (status 'paused', last.pt written) without changing
    its config or schedule; calling again with a larger budget continues it (successive halving).
    on_evaluation(step, val_loss) is called after each evaluation has been checkpointed; a reason it returns
    stops the run for good (status 'stopped', metrics kept): how a search's pruner ends a hopeless run.

    A NaN or inf loss ends the run as 'diverged' with its metrics kept. An exception ends it as
    'failed' with the error recorded in status.json, and is re-raised.
    """
    run_dir = Path(cfg.out_dir) / cfg.run_name()
    status = read_status(run_dir)
    if status["status"] in FINISHED:
        log.info(f"{run_dir.name}: already {status['status']} ({status.get('reason', '')}); nothing to train")
        return run_dir
    # every user mistake (no CUDA, a missing or unusable corpus, a bad parent) fails before anything is written
    resolve_device(cfg.device)
    tokenizer, splits = prepare_run_data(cfg, run_dir)
    if cfg.parent:
        load_checkpoint(checkpoint_path(cfg.parent, "best"))
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        _train(cfg, run_dir, tokenizer, splits, quiet=quiet, stop_at_step=stop_at_step, on_evaluation=on_evaluation)
    except KeyboardInterrupt:  # Ctrl-C, or a worker's SIGTERM (core.pool): say so, and resume next time
        mark_stopped_training(run_dir, "interrupted", INTERRUPTED_REASON)
        raise
    except PicoError as e:
        with contextlib.suppress(DiskFullError):  # no room for status.json either: it stays "running" (resumed too)
            write_status(run_dir, "failed", str(e))
        raise
    except Exception as e:
        write_status(run_dir, "failed", f"{e.__class__.__name__}: {e}", traceback=traceback.format_exc())
        raise
    return run_dir


def prepare_run_data(cfg: RunConfig, run_dir: Path) -> tuple[Tokenizer, dict[str, torch.Tensor]]:
    """The run's tokenizer (its own saved one when resuming, so its ids never change under it) and the
    encoded splits; a split too short for one training window is a one-line ConfigError."""
    rcfg = cfg.resolved()
    saved = run_dir / "tokenizer.json"
    tokenizer = load_tokenizer(saved) if saved.exists() else None
    tokenizer, splits = data_mod.prepare_data(cfg.corpus, rcfg.tokenizer, rcfg.bpe_vocab_size, tokenizer=tokenizer)
    for name in ("train", "valid"):
        if len(splits[name]) < cfg.block_size + 2:
            raise ConfigError(f"the {name} split of {cfg.corpus} has {len(splits[name])} tokens, fewer than "
                              f"--block_size {cfg.block_size} + 2; use a smaller --block_size or a larger corpus")
    return tokenizer, splits


def start_run(cfg: RunConfig, run_dir: Path, tokenizer: Tokenizer, train_tokens: int) -> Run:
    """A new run (seeded weights, or its parent's best) or an interrupted one restored from last.pt."""
    device = resolve_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if not (run_dir / "tokenizer.json").exists():
        tokenizer.save(run_dir / "tokenizer.json")
    seed_everything(cfg.seed)
    model = build_model(cfg, tokenizer.vocab_size).to(device)
    if cfg.parent:
        model.load_state_dict(load_checkpoint(checkpoint_path(cfg.parent, "best"), map_location=device)["model"])
    last = checkpoint_path(run_dir, "last")
    require = LAST_KEYS + ("average",) if cfg.ema else LAST_KEYS
    ckpt = load_checkpoint(last, map_location=device, require=require) if last.exists() else None
    precision = run_precision(cfg, device, ckpt, model.num_params())
    run = Run(cfg, run_dir, device, model, make_optimizer(model, cfg, device, low_precision=precision == "bf16"),
              Schedule(cfg, total_steps(cfg, train_tokens), steps_per_epoch(cfg, train_tokens)), train_tokens,
              precision, TrainingLoss(run_compiled_loss(cfg, device, ckpt, tokenizer.vocab_size)),
              average=make_average(model, cfg.ema))
    if ckpt is not None:
        run.restore(ckpt)
        write_metrics(run_dir, run.rows)  # rows after last.pt (if any) are dropped: they will be recomputed
        write_train_log(run_dir, run.log_rows)
        log.info(f"{run_dir.name}: resuming at step {run.ts.step}/{run.max_steps}")
    write_config(run_dir, cfg, {"vocab_size": tokenizer.vocab_size, "num_params": model.num_params(),
                                "device_used": str(device), "precision_used": precision,
                                "max_steps_resolved": run.max_steps, "train_tokens": train_tokens})
    write_status(run_dir, "running", "resumed" if ckpt else "started", step=run.ts.step, max_steps=run.max_steps)
    return run


def run_precision(cfg: RunConfig, device: torch.device, ckpt: dict[str, Any] | None, num_params: int) -> str:
    """--precision made concrete. A resumed run under auto keeps the precision it started with (a last.pt
    from before --precision existed: the one of that code), so its numbers do not depend on where it resumes."""
    if cfg.precision == "auto" and ckpt is not None:
        return ckpt["train_state"].get("precision") or legacy_precision(device)
    precision = resolve_precision(cfg.precision, device, num_params)
    if precision == "bf16" and device.type == "cpu" and not cpu_has_bf16():
        log.warning("--precision bf16 on a CPU without bf16 units (AVX512-BF16, AMX): torch emulates it, "
                    "which is slower than fp32")
    return precision


def run_compiled_loss(cfg: RunConfig, device: torch.device, ckpt: dict[str, Any] | None, vocab_size: int) -> bool:
    """--compile_loss made concrete. A resumed run under auto keeps the loss it started with (eager for a
    last.pt from before --compile_loss existed), so its numbers do not depend on where it resumes."""
    if cfg.compile_loss == "auto" and ckpt is not None:
        return bool(ckpt["train_state"].get("compiled_loss", False))
    return wants_compiled_loss(cfg.compile_loss, device, cfg.batch_size * cfg.block_size * vocab_size)


def train_step(run: Run, train_model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, carry: bool,
               measure: bool) -> tuple[torch.Tensor, dict[str, float]]:
    """Forward, backward, clip, optimizer step. carry: the batch continues the previous one's streams, so
    the model starts from (and keeps) the carried state. Returns the loss (on the device, not synced) and,
    when measure is set, the gradient and weight statistics of the metric row."""
    with autocast_context(run.device, run.precision):
        logits, new_state = train_model(x, run.carry if carry else None)
    loss = run.loss(logits, y)
    run.carry = detach_state(new_state) if carry else None
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    stats: dict[str, float] = {}
    if measure:
        stats["grad_norm_preclip"], stats["max_param_grad"] = grad_stats(run.model)
    if run.cfg.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), run.cfg.grad_clip)
    if measure:
        stats["grad_norm_postclip"] = grad_stats(run.model)[0]
    run.optimizer.step()
    if run.average is not None:
        run.average.update_parameters(run.model)
    if measure:
        stats["weight_norm"] = weight_norm(run.model)
    return loss.detach(), stats


def evaluation_row(run: Run, val_data: torch.Tensor, train_loss: float, lr: float, tokens_per_sec: float,
                   stats: dict[str, float]) -> dict[str, Any]:
    # evaluated as before --precision (fp32 on a CPU) whatever the run trains in: val losses stay comparable
    ev = evaluate(run.evaluated_model, val_data, run.cfg.batch_size, run.cfg.block_size, run.device,
                  run.cfg.eval_tokens)
    row = {"step": run.ts.step, "epoch": run.ts.tokens_seen / run.train_tokens, "tokens_seen": run.ts.tokens_seen,
           "avg_loss": train_loss, "val_loss": ev["loss"], "perplexity": ev["perplexity"],
           "token_accuracy": ev["accuracy"], **stats, "learning_rate": lr, "tokens_per_sec": tokens_per_sec,
           "elapsed_sec": run.ts.elapsed}
    if run.average is not None:  # the trained weights' own loss: what the average gains, in the same run
        row["val_loss_raw"] = evaluate(run.model, val_data, run.cfg.batch_size, run.cfg.block_size, run.device,
                                       run.cfg.eval_tokens)["loss"]
    return row


def after_evaluation(run: Run, val_loss: float) -> str | None:
    """Keep the best weights, step the schedule, checkpoint; the reason to stop now, if there is one."""
    ts = run.ts
    if val_loss < ts.best_val:
        ts.best_val, ts.best_step, ts.bad_evals = val_loss, ts.step, 0
        save_best(run, val_loss)
    else:
        ts.bad_evals += 1
    run.schedule.observe(val_loss)
    save_checkpoint(run)
    write_run_events(run.run_dir)  # TensorBoard (the optional extra): a no-op without it
    if run.cfg.early_stop_patience and ts.bad_evals >= run.cfg.early_stop_patience:
        return (f"early stopping: val loss did not improve for {ts.bad_evals} evaluations "
                f"(best {ts.best_val:.4f} at step {ts.best_step})")
    return None


def _train(cfg: RunConfig, run_dir: Path, tokenizer: Tokenizer, splits: dict[str, torch.Tensor], quiet: bool,
           stop_at_step: int | None, on_evaluation: Callable[[int, float], str | None] | None = None) -> None:
    run = start_run(cfg, run_dir, tokenizer, len(splits["train"]))
    val_data = splits["valid"]
    batches = Batches(cfg, splits["train"], run.device)
    train_model = torch.compile(run.model) if cfg.compile else run.model
    limit = run.max_steps if stop_at_step is None else min(run.max_steps, stop_at_step)
    if not run.rows:  # the untrained model's loss: the baseline every curve starts from
        run.rows.append(evaluation_row(run, val_data, math.nan, run.schedule.lr(0), math.nan,
                                       {"weight_norm": weight_norm(run.model)}))
        write_metrics(run_dir, run.rows)
    check_every = 1 if run.device.type == "cpu" else GPU_FINITE_CHECK_EVERY
    bar = tqdm(total=run.max_steps, initial=run.ts.step, desc=run_dir.name, disable=quiet or not cfg.progress,
               dynamic_ncols=True, leave=False, mininterval=0.5)
    run.model.train()
    dropout_warmup = DropoutWarmup(run.model, cfg.dropout_warmup, run.max_steps)
    loss_sum, loss_count = torch.zeros((), device=run.device), 0  # since the last evaluation
    log_sum, log_count = torch.zeros((), device=run.device), 0  # since the last train_log row
    interval_start, interval_tokens = time.perf_counter(), 0
    status, reason = "done", f"completed {run.max_steps} steps"
    while run.ts.step < limit:
        lr = run.schedule.lr(run.ts.step)
        for group in run.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        dropout_warmup(run.ts.step)
        x, y = batches(run)
        is_eval_step = (run.ts.step + 1) % cfg.eval_interval == 0 or run.ts.step + 1 == limit
        loss, stats = train_step(run, train_model, x, y, carry=batches.stream, measure=is_eval_step)
        run.ts.step += 1
        run.ts.tokens_seen += x.numel()
        interval_tokens += x.numel()
        loss_sum += loss
        loss_count += 1
        log_sum += loss
        log_count += 1
        bar.update(1)
        if run.ts.step % cfg.log_interval == 0 or is_eval_step:  # one device sync per log row, not per step
            run.log_rows.append({"step": run.ts.step, "train_loss": log_sum.item() / log_count, "learning_rate": lr,
                                 "tokens_seen": run.ts.tokens_seen,
                                 "elapsed_sec": run.ts.elapsed + time.perf_counter() - interval_start})
            log_sum.zero_()
            log_count = 0
        if (run.ts.step % check_every == 0 or is_eval_step) and not math.isfinite(loss_sum.item()):
            status, reason = "diverged", f"non-finite training loss at step {run.ts.step}"
            break
        if not is_eval_step:
            continue
        seconds = time.perf_counter() - interval_start
        run.ts.elapsed += seconds
        row = evaluation_row(run, val_data, loss_sum.item() / loss_count, lr, interval_tokens / max(seconds, 1e-9),
                             stats)
        run.rows.append(row)
        bar.set_postfix(loss=f"{row['avg_loss']:.3f}", val=f"{row['val_loss']:.3f}")
        if not quiet:
            log.info(f"{run_dir.name} step {run.ts.step}/{run.max_steps} train {row['avg_loss']:.4f} "
                     f"val {row['val_loss']:.4f} ppl {row['perplexity']:.2f} acc {row['token_accuracy']:.3f} "
                     f"lr {lr:.2e} {row['tokens_per_sec']:.0f} tok/s")
        if not math.isfinite(row["val_loss"]):
            status, reason = "diverged", f"non-finite validation loss at step {run.ts.step}"
            break
        loss_sum.zero_()
        loss_count = 0
        early_stop = after_evaluation(run, row["val_loss"])
        if early_stop:
            reason = early_stop
            break
        pruned = on_evaluation(run.ts.step, row["val_loss"]) if on_evaluation else None
        if pruned and run.ts.step < run.max_steps:  # at the last step there is nothing left to save
            status, reason = "stopped", pruned
            break
        interval_start, interval_tokens = time.perf_counter(), 0
    else:  # the loop ran out of steps: the whole schedule, or only the budget this call was given
        if run.ts.step < run.max_steps:
            status, reason = "paused", f"paused at step {run.ts.step} of {run.max_steps} (step budget)"
    bar.close()
    end_run(run, status, reason)


def end_run(run: Run, status: str, reason: str) -> None:
    """Write the run's rows and its last event file, then its status: status.json is written last, so a run
    killed before it is resumed (and ends the same), never left finished with a half-written event file."""
    write_metrics(run.run_dir, run.rows)
    write_train_log(run.run_dir, run.log_rows)
    record = status_record(run.run_dir, status, reason, step=run.ts.step, max_steps=run.max_steps,
                           best_val_loss=run.ts.best_val if math.isfinite(run.ts.best_val) else None,
                           best_step=run.ts.best_step, train_seconds=run.ts.elapsed)
    write_run_events(run.run_dir, status=record)
    save_status(run.run_dir, record)
    log.info(f"{run.run_dir.name}: {status} ({reason})")
