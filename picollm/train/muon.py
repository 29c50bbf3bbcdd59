"""Muon with its Newton-Schulz iteration batched over same-shape matrices.

Hand-written because torch.optim.Muon orthogonalises one matrix at a time, each cast to bfloat16 on its
own: at picollm's shapes (the 4 x 4 x 128 transformer has 24 matrices, of three shapes) the many small
calls cost as much as their arithmetic. Here the matrices of one shape are stacked into one (N, rows,
cols) batch and iterated with torch.bmm / torch.baddbmm, as modded-nanogpt does (on this CPU, bf16, one
thread: 14 ms of Newton-Schulz a step instead of 21-26 ms); momentum, weight decay and the update use
torch._foreach_* ops.

Everything else is torch.optim.Muon's. The class subclasses it, so the constructor, its defaults and checks,
the param_groups keys and state[p]["momentum_buffer"] are torch's own and a state_dict of either loads into
the other: Nesterov momentum 0.95, Keller Jordan's quintic coefficients, 5 steps, the 'original' step size
lr * sqrt(max(1, rows / cols)), decoupled weight decay lr * weight_decay.

ns_dtype is the iteration's dtype. bfloat16 (the default) is what torch.optim.Muon itself iterates in, and
gives its numbers bit for bit. float32 is for CPUs without bf16 units, where a bfloat16 matmul is emulated
(about 15x slower than float32 with oneDNN held to AVX2); matrices at least twice as wide as tall are then
iterated on their Gram matrix (zeropower_via_gram_newtonschulz), the same polynomial in 1.8x fewer flops at
4:1. Both float32 forms are within 4e-4 of the float64 iteration, where bfloat16 is 1e-2 to 2 away from it
(relative Frobenius error, on ill-conditioned test matrices).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable

import torch
from torch import Tensor


def normalised_wide(G: Tensor, eps: float, dtype: torch.dtype) -> tuple[Tensor, bool]:
    """G (N, rows, cols) in dtype, transposed if tall (so X X^T is the smaller Gram matrix), each matrix
    scaled to Frobenius norm 1 so its spectral norm is <= 1; and whether it was transposed."""
    tall = G.size(-2) > G.size(-1)
    X = G.to(dtype)
    if tall:
        X = X.mT  # a view, as torch iterates it: (N, m, n) with m <= n
    return X / X.norm(dim=(-2, -1), keepdim=True).clamp(min=eps), tall


def zeropower_via_newtonschulz(G: Tensor, coefficients: tuple[float, float, float], steps: int, eps: float,
                               dtype: torch.dtype) -> Tensor:
    """Each matrix of G (N, rows, cols) approximately orthogonalised, U S' V^T with S' ~ 1, in dtype:
    torch's _zeropower_via_newtonschulz, batched."""
    a, b, c = coefficients
    X, tall = normalised_wide(G, eps, dtype)
    for _ in range(steps):
        A = torch.bmm(X, X.mT)  # (N, m, m)
        B = torch.baddbmm(A, A, A, beta=b, alpha=c)  # b A + c A^2
        X = torch.baddbmm(X, B, X, beta=a)  # a X + B X: (N, m, n)
    return X.mT if tall else X


def zeropower_via_gram_newtonschulz(G: Tensor, coefficients: tuple[float, float, float], steps: int,
                                    eps: float, dtype: torch.dtype) -> Tensor:
    """The same iteration on the Gram matrix. A step is X <- Q X with Q = a I + b A + c A^2, A = X X^T; every
    Q and A stays a polynomial in A_0, so A_{k+1} = Q A_k Q and the result is Q_4 ... Q_0 X_0. Per step
    4 m^3 instead of 2 m^2 n + m^3 multiply-adds, so it pays once n > 1.5 m. In bfloat16 the rounding errors
    of A grow unchecked (singular values of 40 where 1.2 is expected): float32 or wider only."""
    a, b, c = coefficients
    X, tall = normalised_wide(G, eps, dtype)
    A = torch.bmm(X, X.mT)  # (N, m, m)
    P = None  # Q_k ... Q_0
    for k in range(steps):
        Q = torch.baddbmm(A, A, A, beta=b, alpha=c)
        Q.diagonal(dim1=-2, dim2=-1).add_(a)
        P = Q if P is None else torch.bmm(Q, P)
        if k < steps - 1:
            A = torch.bmm(Q, torch.bmm(Q, A))
    X = X if P is None else torch.bmm(P, X)
    return X.mT if tall else X


def orthogonalise(G: Tensor, group: dict, dtype: torch.dtype) -> Tensor:
    """G (N, rows, cols) orthogonalised with the group's settings: on the Gram matrix where that is cheaper
    and dtype holds it, otherwise as torch does."""
    m, n = sorted(G.shape[-2:])
    gram = dtype in (torch.float32, torch.float64) and n >= 2 * m
    zeropower = zeropower_via_gram_newtonschulz if gram else zeropower_via_newtonschulz
    return zeropower(G, group["ns_coefficients"], group["ns_steps"], group["eps"], dtype)


def adjusted_lr(lr: float, adjust_lr_fn: str | None, shape: torch.Size) -> float:
    """torch.optim.Muon's step size for a rows x cols matrix: updates of every shape get a like RMS."""
    rows, cols = shape[:2]
    if adjust_lr_fn is None or adjust_lr_fn == "original":
        return lr * math.sqrt(max(1, rows / cols))
    if adjust_lr_fn == "match_rms_adamw":
        return lr * 0.2 * math.sqrt(max(rows, cols))
    return lr


def by_shape(params: list[Tensor]) -> dict[torch.Size, list[int]]:
    """Indices of params grouped by shape, in order: each group is one Newton-Schulz batch. A tall shape and
    its transpose stay apart: a tall batch is iterated as a transposed view, as torch does it per matrix,
    which keeps the bfloat16 result bit for bit torch.optim.Muon's."""
    groups: dict[torch.Size, list[int]] = defaultdict(list)
    for i, p in enumerate(params):
        groups[p.shape].append(i)
    return groups


class Muon(torch.optim.Muon):
    """torch.optim.Muon with the orthogonalisation batched per shape; ns_dtype: the iteration's dtype."""

    def __init__(self, params, *args, ns_dtype: torch.dtype = torch.bfloat16, **kwargs) -> None:
        super().__init__(params, *args, **kwargs)
        # an attribute, not a group key: loading a state_dict replaces the groups with the saved ones
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

    def _momentum_buffers(self, params: list[Tensor]) -> list[Tensor]:
        for p in params:
            if "momentum_buffer" not in self.state[p]:
                self.state[p]["momentum_buffer"] = torch.zeros_like(p.grad)
        return [self.state[p]["momentum_buffer"] for p in params]

    def _step_group(self, group: dict, params: list[Tensor]) -> None:
        grads = [p.grad for p in params]
        if any(g.is_sparse or torch.is_complex(g) for g in grads):
            raise RuntimeError("Muon supports neither sparse gradients nor complex parameters")
        bufs = self._momentum_buffers(params)
        torch._foreach_lerp_(bufs, grads, 1 - group["momentum"])
        updates = torch._foreach_lerp(grads, bufs, group["momentum"]) if group["nesterov"] else bufs
        lr = float(group["lr"])  # a float, or a one-element tensor as torch allows
        if group["weight_decay"]:
            torch._foreach_mul_(params, 1 - lr * group["weight_decay"])
        for shape, idx in by_shape(params).items():
            ortho = orthogonalise(torch.stack([updates[i] for i in idx]), group, self.ns_dtype)
            torch._foreach_add_([params[i] for i in idx], list(ortho.unbind(0)),  # bf16 into fp32, as torch
                                alpha=-adjusted_lr(lr, group["adjust_lr_fn"], shape))
