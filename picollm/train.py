"""train_run(cfg) -> run_dir: the one function every backend (main.py, local workers, Ray) calls.

A run is idempotent and resumable. Its directory is named by the config's fingerprint; a finished run
is returned untouched; an interrupted one restarts from last.pt (weights, optimizer, plateau state, RNG,
the carried recurrent state and the metric rows so far) and ends with the same metrics as if it had never
stopped. Checkpoints are written only at evaluation points, where the running train-loss accumulator is
empty, so nothing else needs saving.
"""

from __future__ import annotations

import math
import platform
import time
import traceback
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from picollm import data as data_mod
from picollm.config import RunConfig
from picollm.errors import CheckpointError, ConfigError, PicoError
from picollm.log import get_logger
from picollm.models import build_model
from picollm.models.base import LanguageModel, detach_state, map_state
from picollm.runs import (
    FINISHED,
    atomic_torch_save,
    atomic_write_json,
    atomic_write_text,
    load_checkpoint,
    read_status,
    write_status,
)
from picollm.tokenizers import load_tokenizer

METRIC_COLUMNS = [
    "step", "epoch", "tokens_seen", "avg_loss", "val_loss", "perplexity", "token_accuracy",
    "grad_norm_preclip", "grad_norm_postclip", "max_param_grad", "weight_norm", "learning_rate",
    "tokens_per_sec", "elapsed_sec",
]

log = get_logger()


# --------------------------------------------------------------------------------------------------
# devices, precision, determinism
# --------------------------------------------------------------------------------------------------
def resolve_device(name: str) -> torch.device:
    """torch.device for --device, with a one-line error when it is not available."""
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {name} asked for, but CUDA is not available here; use --device cpu")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("--device mps asked for, but MPS is not available here; use --device cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device {name!r} is not a torch device; use cpu, cuda, cuda:N or mps") from None


def autocast_context(device: torch.device):
    """bf16 autocast on CUDA (matmuls in bf16, losses in fp32); plain fp32 elsewhere."""
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return nullcontext()


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def library_versions() -> dict[str, str]:
    import numpy
    import tokenizers

    import picollm

    return {"picollm": picollm.__version__, "torch": torch.__version__, "numpy": numpy.__version__,
            "tokenizers": tokenizers.__version__, "python": platform.python_version()}


# --------------------------------------------------------------------------------------------------
# schedule
# --------------------------------------------------------------------------------------------------
def lr_at(cfg: RunConfig, step: int, max_steps: int) -> float:
    """Learning rate for optimisation step `step` (0-based): linear warmup, then cosine / constant / plateau."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.schedule != "cosine":
        return cfg.lr  # plateau decay is applied on top by the trainer
    progress = (step - cfg.warmup_steps) / max(1, max_steps - cfg.warmup_steps)
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + 0.5 * (cfg.lr - floor) * (1.0 + math.cos(math.pi * min(1.0, progress)))


def make_optimizer(model: torch.nn.Module, cfg: RunConfig, device: torch.device) -> torch.optim.Optimizer:
    """AdamW; weight decay on matrices and embeddings only (not on biases and norm gains)."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=device.type == "cuda")


# --------------------------------------------------------------------------------------------------
# evaluation
# --------------------------------------------------------------------------------------------------
@torch.no_grad()
def token_losses(model: LanguageModel, data: torch.Tensor, batch_size: int, block_size: int,
                 device: torch.device, max_tokens: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-target (target id, loss, correct) over `data` read as `batch_size` contiguous streams.

    Recurrent families carry their state from one window to the next (exact full-history loss); the
    transformer starts every window afresh. Returns three 1-D CPU tensors of equal length.
    """
    if max_tokens:
        data = data[: max_tokens + 1]
    rows = max(1, min(batch_size, (len(data) - 1) // 2))
    streams = data_mod.batchify(data, rows).to(device)
    was_training = model.training
    model.eval()
    targets, losses, correct = [], [], []
    state = None
    with autocast_context(device):
        for i in range(data_mod.num_segments(streams, block_size)):
            x, y = data_mod.stream_segment(streams, i, block_size)
            logits, state = model(x, state if model.carries_state else None)
            logits = logits.float()
            losses.append(F.cross_entropy(logits.transpose(1, 2), y, reduction="none").flatten().cpu())
            correct.append((logits.argmax(-1) == y).flatten().cpu())
            targets.append(y.flatten().cpu())
    model.train(was_training)
    return torch.cat(targets), torch.cat(losses), torch.cat(correct)


def evaluate(model: LanguageModel, data: torch.Tensor, batch_size: int, block_size: int,
             device: torch.device, max_tokens: int = 0) -> dict[str, float]:
    """Mean loss, perplexity and next-token accuracy on held-out data."""
    _, losses, correct = token_losses(model, data, batch_size, block_size, device, max_tokens)
    loss = losses.double().mean().item()
    return {"loss": loss, "perplexity": math.exp(min(loss, 700.0)), "accuracy": correct.double().mean().item(),
            "tokens": len(losses)}


# --------------------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------------------
@dataclass
class TrainState:
    """Everything besides weights and optimizer that a resumed run needs to continue exactly."""

    step: int = 0
    tokens_seen: int = 0
    elapsed: float = 0.0
    best_val: float = math.inf
    best_step: int = -1
    bad_evals: int = 0
    plateau_scale: float = 1.0
    plateau_best: float = math.inf
    plateau_bad: int = 0


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


def write_config(run_dir: Path, cfg: RunConfig, extra: dict[str, Any]) -> None:
    record = cfg.resolved().to_dict()
    record.update(fingerprint=cfg.fingerprint(), run_name=cfg.run_name(), versions=library_versions(), **extra)
    atomic_write_json(run_dir / "config.json", record)


def write_metrics(run_dir: Path, rows: list[dict]) -> None:
    atomic_write_text(run_dir / "metrics.csv", pd.DataFrame(rows, columns=METRIC_COLUMNS).to_csv(index=False))


def train_run(cfg: RunConfig, *, quiet: bool = False, stop_at_step: int | None = None) -> Path:
    """Train the run described by cfg (or resume / skip it) and return its directory.

    stop_at_step pauses the run after that many steps (status 'paused', last.pt written) without changing
    its config or schedule; calling again with a larger budget continues it (successive halving).

    A NaN or inf loss ends the run as 'diverged' with its metrics kept. An exception ends it as
    'failed' with the error recorded in status.json, and is re-raised.
    """
    run_dir = Path(cfg.out_dir) / cfg.run_name()
    status = read_status(run_dir)
    if status["status"] in FINISHED:
        log.info(f"{run_dir.name}: already {status['status']} ({status.get('reason', '')}); nothing to train")
        return run_dir
    resolve_device(cfg.device)  # user mistakes (no CUDA, missing corpus) fail before anything is written
    data_mod.load_splits(cfg.corpus)
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        _train(cfg, run_dir, quiet=quiet, stop_at_step=stop_at_step)
    except PicoError as e:
        write_status(run_dir, "failed", str(e))
        raise
    except Exception as e:
        write_status(run_dir, "failed", f"{e.__class__.__name__}: {e}", traceback=traceback.format_exc())
        raise
    return run_dir


def _train(cfg: RunConfig, run_dir: Path, quiet: bool, stop_at_step: int | None) -> None:
    device = resolve_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    rcfg = cfg.resolved()
    last_path = run_dir / "last.pt"
    resuming = last_path.exists()

    # tokenizer: a resumed run reuses its own, so its ids never change under it
    tokenizer = load_tokenizer(run_dir / "tokenizer.json") if (run_dir / "tokenizer.json").exists() else None
    tokenizer, splits = data_mod.prepare_data(cfg.corpus, rcfg.tokenizer, rcfg.bpe_vocab_size, tokenizer=tokenizer)
    if not (run_dir / "tokenizer.json").exists():
        tokenizer.save(run_dir / "tokenizer.json")
    train_data, val_data = splits["train"], splits["valid"]
    for name, split in (("train", train_data), ("valid", val_data)):
        if len(split) < cfg.block_size + 2:
            raise ConfigError(f"the {name} split of {cfg.corpus} has {len(split)} tokens, fewer than "
                              f"--block_size {cfg.block_size} + 2; use a smaller --block_size or a larger corpus")
    max_steps = total_steps(cfg, len(train_data))
    limit = max_steps if stop_at_step is None else min(max_steps, stop_at_step)

    seed_everything(cfg.seed)
    model = build_model(cfg, tokenizer.vocab_size).to(device)
    if cfg.parent:
        parent = load_checkpoint(Path(cfg.parent) / "best.pt", map_location=device)
        model.load_state_dict(parent["model"])
    optimizer = make_optimizer(model, cfg, device)
    train_model = torch.compile(model) if cfg.compile else model
    ts = TrainState()
    rows: list[dict] = []
    carry = None

    if resuming:
        ckpt = load_checkpoint(last_path, map_location=device)
        if ckpt.get("fingerprint") != cfg.fingerprint():
            raise CheckpointError(f"{last_path} belongs to another config; move {run_dir} away and retrain")
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        ts = TrainState(**ckpt["train_state"])
        rows = list(ckpt["metrics"])
        carry = map_state(lambda t: t.to(device), ckpt["carry_state"])
        torch.set_rng_state(ckpt["rng"]["torch"].cpu())
        if device.type == "cuda" and ckpt["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(ckpt["rng"]["cuda"].cpu(), device)
        write_metrics(run_dir, rows)  # rows after last.pt (if any) are dropped: they will be recomputed
        log.info(f"{run_dir.name}: resuming at step {ts.step}/{max_steps}")

    write_config(run_dir, cfg, {"vocab_size": tokenizer.vocab_size, "num_params": model.num_params(),
                                "device_used": str(device), "max_steps_resolved": max_steps,
                                "train_tokens": len(train_data)})
    write_status(run_dir, "running", "resumed" if resuming else "started", step=ts.step, max_steps=max_steps)

    stream = rcfg.batching == "stream"
    streams = data_mod.batchify(train_data, cfg.batch_size).to(device) if stream else None
    n_segments = data_mod.num_segments(streams, cfg.block_size) if stream else 0
    train_on_device = train_data.to(device)
    tokens_per_epoch = len(train_data)

    def evaluate_now() -> dict[str, float]:
        return evaluate(model, val_data, cfg.batch_size, cfg.block_size, device, cfg.eval_tokens)

    def checkpoint_payload() -> dict:
        rng = {"torch": torch.get_rng_state(),
               "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}
        return {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "train_state": vars(ts).copy(),
                "metrics": rows, "carry_state": map_state(lambda t: t.detach().cpu(), carry), "rng": rng,
                "scheduler": {"kind": cfg.schedule, "plateau_scale": ts.plateau_scale}, "step": ts.step,
                "fingerprint": cfg.fingerprint()}

    if not rows:  # the untrained model's loss: the baseline every curve starts from
        ev = evaluate_now()
        rows.append({"step": 0, "epoch": 0.0, "tokens_seen": 0, "avg_loss": math.nan, "val_loss": ev["loss"],
                     "perplexity": ev["perplexity"], "token_accuracy": ev["accuracy"], "weight_norm": weight_norm(model),
                     "learning_rate": lr_at(cfg, 0, max_steps), "elapsed_sec": 0.0})
        write_metrics(run_dir, rows)

    model.train()
    loss_sum = torch.zeros((), device=device)
    loss_count = 0
    interval_start, interval_tokens = time.perf_counter(), 0
    stop_reason = f"completed {max_steps} steps"
    final_status = "done"
    bar = tqdm(total=max_steps, initial=ts.step, desc=run_dir.name, disable=quiet or not cfg.progress,
               dynamic_ncols=True, leave=False, mininterval=0.5)
    check_every = 1 if device.type == "cpu" else 25  # a finiteness check syncs the GPU; don't do it every step
    while ts.step < limit:
        lr = lr_at(cfg, ts.step, max_steps) * ts.plateau_scale
        for group in optimizer.param_groups:
            group["lr"] = lr
        if stream:
            segment = ts.step % n_segments
            if segment == 0:
                carry = None  # a new pass over the data starts from an empty state
            x, y = data_mod.stream_segment(streams, segment, cfg.block_size)
        else:
            gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + ts.step)
            x, y = data_mod.random_windows(train_on_device, cfg.batch_size, cfg.block_size, gen)
        with autocast_context(device):
            logits, new_state = train_model(x, carry if stream else None)
        loss = F.cross_entropy(logits.float().transpose(1, 2), y)
        carry = detach_state(new_state) if stream else None
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        is_eval_step = (ts.step + 1) % cfg.eval_interval == 0 or ts.step + 1 == limit
        if is_eval_step:
            pre_norm, max_grad = grad_stats(model)
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        if is_eval_step:
            post_norm, _ = grad_stats(model)
        optimizer.step()
        ts.step += 1
        ts.tokens_seen += x.numel()
        interval_tokens += x.numel()
        loss_sum += loss.detach()
        loss_count += 1
        bar.update(1)

        if ts.step % check_every == 0 or is_eval_step:
            if not math.isfinite(loss_sum.item()):
                stop_reason, final_status = f"non-finite training loss at step {ts.step}", "diverged"
                break

        if is_eval_step:
            now = time.perf_counter()
            interval_seconds = now - interval_start
            ts.elapsed += interval_seconds
            ev = evaluate_now()
            row = {"step": ts.step, "epoch": ts.tokens_seen / tokens_per_epoch, "tokens_seen": ts.tokens_seen,
                   "avg_loss": loss_sum.item() / loss_count, "val_loss": ev["loss"], "perplexity": ev["perplexity"],
                   "token_accuracy": ev["accuracy"], "grad_norm_preclip": pre_norm, "grad_norm_postclip": post_norm,
                   "max_param_grad": max_grad, "weight_norm": weight_norm(model), "learning_rate": lr,
                   "tokens_per_sec": interval_tokens / max(interval_seconds, 1e-9), "elapsed_sec": ts.elapsed}
            rows.append(row)
            bar.set_postfix(loss=f"{row['avg_loss']:.3f}", val=f"{ev['loss']:.3f}")
            if not quiet:
                log.info(f"{run_dir.name} step {ts.step}/{max_steps} train {row['avg_loss']:.4f} "
                         f"val {ev['loss']:.4f} ppl {ev['perplexity']:.2f} acc {ev['accuracy']:.3f} "
                         f"lr {lr:.2e} {row['tokens_per_sec']:.0f} tok/s")
            if not math.isfinite(ev["loss"]):
                stop_reason, final_status = f"non-finite validation loss at step {ts.step}", "diverged"
                write_metrics(run_dir, rows)
                break
            improved = ev["loss"] < ts.best_val
            if improved:
                ts.best_val, ts.best_step, ts.bad_evals = ev["loss"], ts.step, 0
                atomic_torch_save({"model": model.state_dict(), "step": ts.step, "val_loss": ev["loss"],
                                   "fingerprint": cfg.fingerprint()}, run_dir / "best.pt")
            else:
                ts.bad_evals += 1
            if cfg.schedule == "plateau":
                if ev["loss"] < ts.plateau_best:
                    ts.plateau_best, ts.plateau_bad = ev["loss"], 0
                else:
                    ts.plateau_bad += 1
                    if ts.plateau_bad >= cfg.plateau_patience:
                        ts.plateau_scale *= cfg.plateau_factor
                        ts.plateau_bad = 0
            loss_sum.zero_()
            loss_count = 0
            # last.pt before metrics.csv: after a crash between the two, resume rewrites metrics from last.pt
            atomic_torch_save(checkpoint_payload(), last_path)
            write_metrics(run_dir, rows)
            write_status(run_dir, "running", "training", step=ts.step, max_steps=max_steps)
            interval_start, interval_tokens = time.perf_counter(), 0
            if cfg.early_stop_patience and ts.bad_evals >= cfg.early_stop_patience:
                stop_reason = (f"early stopping: val loss did not improve for {ts.bad_evals} evaluations "
                               f"(best {ts.best_val:.4f} at step {ts.best_step})")
                break
    bar.close()
    if final_status == "done" and ts.step < max_steps and not stop_reason.startswith("early"):
        final_status, stop_reason = "paused", f"paused at step {ts.step} of {max_steps} (step budget)"
    write_metrics(run_dir, rows)
    write_status(run_dir, final_status, stop_reason, step=ts.step, max_steps=max_steps,
                 best_val_loss=ts.best_val if math.isfinite(ts.best_val) else None, best_step=ts.best_step,
                 train_seconds=ts.elapsed)
    log.info(f"{run_dir.name}: {final_status} ({stop_reason})")
