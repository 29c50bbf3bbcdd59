"""The learning-rate schedule: linear warmup, then cosine decay to a floor, a constant rate, a plateau
schedule (the rate is multiplied by plateau_factor whenever the validation loss has not improved for
plateau_patience evaluations), warmup-stable-decay (constant, then a linear decay to the floor over the
last decay_frac of the run), or step decay by epoch (Zaremba et al. 2014 / TensorFlow's PTB tutorial).

Every schedule spans the run's own step budget (max_steps, or its epochs in steps), so a short run decays
to its floor by its own end instead of stopping part-way down a longer run's curve.

The trainer sets each parameter group's rate to lr(step) * group["lr_scale"] (1 when absent): Muon's
matrices follow the same curve at muon_lr.

DropoutWarmup is the dropout rates' schedule (--dropout_warmup)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import nn

from picollm.config import RunConfig


def lr_at(cfg: RunConfig, step: int, max_steps: int, steps_per_epoch: int = 1) -> float:
    """The rate for optimisation step `step` (0-based) before any plateau decay: linear warmup, then cosine to
    lr * min_lr_ratio at max_steps, constant, wsd, or step decay (epoch = step // steps_per_epoch)."""
    cfg = cfg.resolved()  # auto schedule and unset rates: the family's (a few microseconds; a step takes ms)
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "cosine":
        progress = (step - cfg.warmup_steps) / max(1, max_steps - cfg.warmup_steps)
        floor = cfg.lr * cfg.min_lr_ratio
        return floor + 0.5 * (cfg.lr - floor) * (1.0 + math.cos(math.pi * min(1.0, progress)))
    if cfg.schedule == "wsd":
        # the decay never starts inside the warmup: a run too short for both decays over all steps after it
        decay_start = max(cfg.warmup_steps, (1.0 - cfg.decay_frac) * max_steps)
        if step < decay_start:
            return cfg.lr
        remaining = max(0.0, max_steps - step) / max(1.0, max_steps - decay_start)
        return cfg.lr * (cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * min(1.0, remaining))
    if cfg.schedule == "step":
        # TensorFlow's PTB tutorial: lr * lr_decay ** max(0, i + 1 - max_epoch) in (0-based) epoch i
        epoch = step // max(1, steps_per_epoch)
        return cfg.lr * cfg.lr_decay ** max(0, epoch + 1 - cfg.decay_start_epoch)
    return cfg.lr


@dataclass
class Schedule:
    """The whole schedule of one run, including the plateau decay it has applied so far (saved in last.pt)."""

    cfg: RunConfig
    max_steps: int
    steps_per_epoch: int = 1
    """optimisation steps in one pass over the training split (the step schedule counts epochs with it)"""
    plateau_scale: float = 1.0
    plateau_best: float = math.inf
    plateau_bad: int = 0

    def lr(self, step: int) -> float:
        return lr_at(self.cfg, step, self.max_steps, self.steps_per_epoch) * self.plateau_scale

    def __post_init__(self) -> None:
        self.cfg = self.cfg.resolved()  # the family's schedule and rates, resolved once

    def observe(self, val_loss: float) -> None:
        """Record an evaluation; the plateau schedule decays the rate when the loss has stalled."""
        if self.cfg.schedule != "plateau":
            return
        if val_loss < self.plateau_best:
            self.plateau_best, self.plateau_bad = val_loss, 0
            return
        self.plateau_bad += 1
        if self.plateau_bad >= self.cfg.plateau_patience:
            self.plateau_scale *= self.cfg.plateau_factor
            self.plateau_bad = 0

    def state_dict(self) -> dict[str, float]:
        return {"plateau_scale": self.plateau_scale, "plateau_best": self.plateau_best,
                "plateau_bad": self.plateau_bad}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.plateau_scale = state.get("plateau_scale", 1.0)
        self.plateau_best = state.get("plateau_best", math.inf)
        self.plateau_bad = int(state.get("plateau_bad", 0))


class DropoutWarmup:
    """--dropout_warmup: every dropout rate of the model rises linearly from 0 at step 0 to the rate it was built
    with at `fraction` of the run's steps, and stays there (curriculum dropout, Morerio et al. 2017). A model
    short of steps learns fastest without dropout early and needs it most in the decay, where a low rate
    overfits (ptb-small-muon-next rows 2-4, docs/results.md).

    The rates are each dropout module's p and each module's float `dropout` attribute: torch's RNNs' dropout
    between layers and the transformer attention's. The LSTM's weight drop (DropConnect) is not a rate here."""

    def __init__(self, model: nn.Module, fraction: float, max_steps: int) -> None:
        self.steps = fraction * max_steps
        # _DropoutNd: torch's one base of nn.Dropout, Dropout1d-3d and AlphaDropout (it has no public one)
        self.rates = [(m, "p", m.p) for m in model.modules() if isinstance(m, nn.modules.dropout._DropoutNd)]
        self.rates += [(m, "dropout", m.dropout) for m in model.modules() if isinstance(getattr(m, "dropout", None), float)]

    def __call__(self, step: int) -> None:
        """Set the rates for optimisation step `step` (0-based); a no-op after the warmup or without one."""
        if step > self.steps:
            return
        scale = min(1.0, step / self.steps) if self.steps else 1.0
        for module, name, rate in self.rates:
            setattr(module, name, rate * scale)
