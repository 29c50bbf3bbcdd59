"""The learning-rate schedule: linear warmup, then cosine decay to a floor, a constant rate, or a plateau
schedule (the rate is multiplied by plateau_factor whenever the validation loss has not improved for
plateau_patience evaluations)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from picollm.config import RunConfig


def lr_at(cfg: RunConfig, step: int, max_steps: int) -> float:
    """The rate for optimisation step `step` (0-based) before any plateau decay: linear warmup, then cosine to
    lr * min_lr_ratio at max_steps, or constant."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.schedule != "cosine":
        return cfg.lr
    progress = (step - cfg.warmup_steps) / max(1, max_steps - cfg.warmup_steps)
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + 0.5 * (cfg.lr - floor) * (1.0 + math.cos(math.pi * min(1.0, progress)))


@dataclass
class Schedule:
    """The whole schedule of one run, including the plateau decay it has applied so far (saved in last.pt)."""

    cfg: RunConfig
    max_steps: int
    plateau_scale: float = 1.0
    plateau_best: float = math.inf
    plateau_bad: int = 0

    def lr(self, step: int) -> float:
        return lr_at(self.cfg, step, self.max_steps) * self.plateau_scale

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
