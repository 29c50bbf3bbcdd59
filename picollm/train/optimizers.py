"""The optimizers of a run: AdamW, plain SGD, or Muon on the hidden matrices beside AdamW on the rest,
stepped as one."""

from __future__ import annotations

from typing import Any

import torch

from picollm.config import RunConfig
from picollm.core.errors import CheckpointError
from picollm.train.muon import NS_SCHEDULES, Muon


class Optimizers:
    """Several optimizers stepped as one (Muon on the hidden matrices, AdamW on the rest), with the part of
    torch.optim.Optimizer's interface the trainer uses. param_groups are the optimizers' own dicts, so
    setting a group's "lr" reaches the optimizer that owns it."""

    def __init__(self, *optimizers: torch.optim.Optimizer) -> None:
        self.optimizers = optimizers

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return [group for opt in self.optimizers for group in opt.param_groups]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for opt in self.optimizers:
            opt.step()

    def state_dict(self) -> dict[str, Any]:
        return {"optimizers": [opt.state_dict() for opt in self.optimizers]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        states = state.get("optimizers", [])
        if len(states) != len(self.optimizers):
            raise CheckpointError(f"the checkpoint holds {len(states)} optimizer states, this run has "
                                  f"{len(self.optimizers)}")
        for opt, opt_state in zip(self.optimizers, states):
            opt.load_state_dict(opt_state)


def hidden_matrices(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The weights Muon orthogonalises: every trainable 2-D parameter except embeddings and the output head,
    whose rows are one vector per token rather than a map between hidden spaces (Muon's authors leave them,
    and everything that is not a matrix, to AdamW), and those of modules that say `adamw_only` (a gate's rows)."""
    skip = {id(p) for m in model.modules() if isinstance(m, torch.nn.Embedding) or getattr(m, "adamw_only", False)
            for p in m.parameters()}
    head = getattr(model, "head", None)
    if isinstance(head, torch.nn.Module):
        skip |= {id(p) for p in head.parameters()}
    return [p for p in model.parameters() if p.requires_grad and p.dim() == 2 and id(p) not in skip]


def _decay_groups(params: list[torch.nn.Parameter], weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on matrices and embeddings only (not on biases and norm gains)."""
    return [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]


def make_optimizer(model: torch.nn.Module, cfg: RunConfig, device: torch.device,
                   low_precision: bool = False) -> torch.optim.Optimizer | Optimizers:
    """AdamW; plain SGD (momentum only if --momentum asks); or Muon on the hidden matrices beside AdamW on
    the rest. Muon's group carries lr_scale = muon_lr / lr, so one schedule drives both (see schedule.py).
    low_precision: Muon's Newton-Schulz iteration in bfloat16 (torch.optim.Muon's own numbers; fast where
    the CPU has bf16 units), else in float32 (emulated bfloat16 is ~15x slower than float32 on CPUs without)."""
    params = [p for p in model.parameters() if p.requires_grad]
    cfg = cfg.resolved()  # --optimizer auto: the family's own
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(_decay_groups(params, cfg.weight_decay), lr=cfg.lr, momentum=cfg.momentum)
    matrices = hidden_matrices(model) if cfg.optimizer == "muon" else []
    in_muon = {id(p) for p in matrices}
    # fused on CUDA; elsewhere foreach, which torch leaves off on CPUs but which gives the per-parameter loop's
    # numbers bit for bit in fewer ops (tests/train/test_optimizers.py)
    fused = device.type == "cuda"
    adamw = torch.optim.AdamW(_decay_groups([p for p in params if id(p) not in in_muon], cfg.weight_decay),
                              lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=fused, foreach=not fused)
    if not matrices:
        return adamw
    muon = Muon([{"params": matrices, "lr_scale": cfg.muon_lr / cfg.lr}], lr=cfg.muon_lr,
                weight_decay=cfg.weight_decay, ns_dtype=torch.bfloat16 if low_precision else torch.float32,
                ns_schedule=NS_SCHEDULES[cfg.muon_ns])
    return Optimizers(muon, adamw)
