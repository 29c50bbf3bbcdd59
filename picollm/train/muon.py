"""Muon with its Newton-Schulz iteration batched over same-shape matrices.

torch.optim.Muon orthogonalises one matrix at a time: at picollm's small shapes (24 matrices of 128 x 128 and
128 x 512 in the 4 x 4 x 128 transformer) each matmul is small, so per-call overhead and a 2-D GEMM that
cannot fill the core cost as much as the arithmetic. Here the matrices of one shape are stacked into one
(N, rows, cols) batch and iterated with torch.bmm / torch.baddbmm, as modded-nanogpt does; momentum, weight
decay and the update go through torch._foreach_* ops.

Everything else is torch.optim.Muon's (this class subclasses it, so the constructor, its defaults and
validation, the param_groups keys and state[p]["momentum_buffer"] are torch's own, and a state_dict written
by one loads into the other): Nesterov momentum 0.95, Keller Jordan's quintic coefficients, 5 steps, the
'original' learning-rate adjustment sqrt(max(1, rows / cols)), decoupled weight decay lr * weight_decay.
ns_dtype is the iteration's dtype: bfloat16 by default, because torch.optim.Muon itself casts to bfloat16
before iterating (so the default gives its numbers); float32 for an exact orthogonalisation (slower on a CPU
with bf16 units, faster on one without).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

import torch
from torch import Tensor
from torch.optim._muon import _adjust_lr


def zeropower_via_newtonschulz(G: Tensor, coefficients: tuple[float, float, float], steps: int, eps: float,
                               dtype: torch.dtype) -> Tensor:
    """Approximately orthogonalise each matrix of G (N, rows, cols): U S' V^T with S' ~ 1, in dtype.

    torch's _zeropower_via_newtonschulz per matrix, batched: tall matrices are iterated transposed, so the
    Gram matrix X X^T is the smaller side, and each is first scaled to Frobenius norm 1 (spectral norm <= 1).
    """
    a, b, c = coefficients
    tall = G.size(-2) > G.size(-1)
    X = G.to(dtype)
    if tall:
        X = X.mT  # (N, cols, rows): wide
    X = X / X.norm(dim=(-2, -1), keepdim=True).clamp(min=eps)
    for _ in range(steps):
        A = torch.bmm(X, X.mT)  # (N, m, m), m = the smaller side
        B = torch.baddbmm(A, A, A, beta=b, alpha=c)  # b A + c A^2
        X = torch.baddbmm(X, B, X, beta=a)  # a X + B X
    return X.mT if tall else X


def nesterov_updates(grads: list[Tensor], bufs: list[Tensor], momentum: float, nesterov: bool) -> list[Tensor]:
    """Advance the momentum buffers in place; the update each matrix is orthogonalised from."""
    torch._foreach_lerp_(bufs, grads, 1 - momentum)
    return torch._foreach_lerp(grads, bufs, momentum) if nesterov else bufs


def by_shape(params: list[Tensor]) -> dict[torch.Size, list[int]]:
    """Indices of params grouped by shape, in order: each group is one Newton-Schulz batch. A tall shape and
    its transpose are not merged: a tall batch is iterated as a transposed view, exactly as torch does it
    per matrix, which keeps the bfloat16 result bit for bit torch.optim.Muon's."""
    groups: dict[torch.Size, list[int]] = defaultdict(list)
    for i, p in enumerate(params):
        groups[p.shape].append(i)
    return groups


class Muon(torch.optim.Muon):
    """torch.optim.Muon with the orthogonalisation batched per shape; ns_dtype: the iteration's dtype."""

    def __init__(self, params, *args, ns_dtype: torch.dtype = torch.bfloat16, **kwargs) -> None:
        super().__init__(params, *args, **kwargs)
        # an attribute, not a group key: a state_dict from torch.optim.Muon replaces the groups on loading
        self.ns_dtype = ns_dtype

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if params:
                self._step_group(group, params)
        return loss

    def _step_group(self, group: dict, params: list[Tensor]) -> None:
        grads = [p.grad for p in params]
        if any(g.is_sparse or torch.is_complex(g) for g in grads):
            raise RuntimeError("Muon supports neither sparse gradients nor complex parameters")
        bufs = [self.state[p].setdefault("momentum_buffer", torch.zeros_like(p.grad)) for p in params]
        updates = nesterov_updates(grads, bufs, group["momentum"], group["nesterov"])
        lr = float(group["lr"])  # a float, or a one-element tensor as torch allows
        if group["weight_decay"]:
            torch._foreach_mul_(params, 1 - lr * group["weight_decay"])
        for shape, idx in by_shape(params).items():
            ortho = zeropower_via_newtonschulz(torch.stack([updates[i] for i in idx]), group["ns_coefficients"],
                                               group["ns_steps"], group["eps"], self.ns_dtype)
            torch._foreach_add_([params[i] for i in idx], list(ortho.to(params[idx[0]].dtype).unbind(0)),
                                alpha=-_adjust_lr(lr, group["adjust_lr_fn"], shape))
