"""Muon with its Newton-Schulz iteration batched over same-shape matrices.

Hand-written because torch.optim.Muon orthogonalises one matrix at a time, each cast to bfloat16 on its
own: at picollm's shapes (the 4 x 4 x 128 transformer has 24 matrices, of three shapes) the many small
calls cost as much as their arithmetic. Here the matrices of one shape (a tall one lying down, as its
transpose) are stacked into one (N, rows, cols) batch and iterated with torch.bmm / torch.baddbmm, as
modded-nanogpt does. Their momentum buffers are kept as the same stack, so momentum is one op per shape and
the batch needs no copy of them; weight decay and the update use torch._foreach_* ops.

Everything else is torch.optim.Muon's. The class subclasses it, so the constructor, its defaults and checks,
the param_groups keys and state[p]["momentum_buffer"] (a view of the stack, in p's shape) are torch's own
and a state_dict of either loads into the other: Nesterov momentum 0.95, the 'original' step size
lr * sqrt(max(1, rows / cols)), decoupled weight decay lr * weight_decay, and by default Keller Jordan's
quintic coefficients, 5 steps.

ns_schedule, when given, replaces the iteration's coefficients: one (a, b, c) per step (torch's group keys
ns_coefficients and ns_steps then go unused). picollm trains with POLAR3 unless --muon_ns says jordan5
(JORDAN5 is torch's iteration; runs from before --muon_ns existed resume with it).

ns_dtype is the iteration's dtype. bfloat16 (the default) is what torch.optim.Muon itself iterates in; with
JORDAN5 it gives torch's numbers (bit for bit at the tests' shapes; a GEMM kernel may sum a large transposed
matrix in another order). float32 is for CPUs without bf16 units, where a bfloat16 matmul is emulated (about
15x slower than float32 with oneDNN held to AVX2); matrices at least twice as wide as tall are then iterated
on their Gram matrix (zeropower_via_gram_newtonschulz), the same polynomials in 1.8x fewer flops at 4:1.
Both float32 forms are within 4e-4 of the float64 iteration, where bfloat16 is 1e-2 to 2 away from it
(relative Frobenius error, on ill-conditioned test matrices).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

#: Newton-Schulz steps, one odd quintic p(s) = a s + b s^3 + c s^5 of the singular values each
Schedule = Sequence[tuple[float, float, float]]
#: Keller Jordan's quintic five times: torch.optim.Muon's iteration
JORDAN5: Schedule = ((3.4445, -4.7750, 2.0315),) * 5
#: three steps of a Polar-Express schedule (Amsel et al. 2025): each quintic the closest to 1 in the worst case
#: over the singular values the steps before leave, from [1e-3, 1], with a 1% safety margin for bfloat16;
#: `python bench/ns_schedule.py` derives them. 40% fewer matrix products than JORDAN5; it maps [1e-3, 1] to
#: [0.14, 1.86] where JORDAN5 gives [0.47, 1.20], and the transformer learns as fast with it (docs/results.md,
#: "Speed on a CPU")
POLAR3: Schedule = ((8.386465, -24.369654, 17.72512), (4.14142, -3.017275, 0.552427),
                    (3.922631, -2.867185, 0.535652))
#: --muon_ns
NS_SCHEDULES: dict[str, Schedule] = {"polar3": POLAR3, "jordan5": JORDAN5}


def normalised_wide(G: Tensor, eps: float, dtype: torch.dtype) -> tuple[Tensor, bool]:
    """G (N, rows, cols) in dtype, transposed if tall (so X X^T is the smaller Gram matrix), each matrix
    scaled to Frobenius norm 1 so its spectral norm is <= 1; and whether it was transposed."""
    X = lying_down(G.to(dtype))  # a view, as torch iterates it: (N, m, n) with m <= n
    return X / X.norm(dim=(-2, -1), keepdim=True).clamp(min=eps), G.size(-2) > G.size(-1)


def zeropower_via_newtonschulz(G: Tensor, schedule: Schedule, eps: float, dtype: torch.dtype) -> Tensor:
    """Each matrix of G (N, rows, cols) approximately orthogonalised, U S' V^T with S' ~ 1, in dtype: one
    step per (a, b, c) of the schedule; with JORDAN5, torch's _zeropower_via_newtonschulz, batched."""
    X, tall = normalised_wide(G, eps, dtype)
    for a, b, c in schedule:
        A = torch.bmm(X, X.mT)  # (N, m, m)
        B = torch.baddbmm(A, A, A, beta=b, alpha=c)  # b A + c A^2
        X = torch.baddbmm(X, B, X, beta=a)  # a X + B X: (N, m, n)
    return X.mT if tall else X


def zeropower_via_gram_newtonschulz(G: Tensor, schedule: Schedule, eps: float, dtype: torch.dtype) -> Tensor:
    """The same iteration on the Gram matrix. A step is X <- Q X with Q = a I + b A + c A^2, A = X X^T; every
    Q and A stays a polynomial in A_0, so A_{k+1} = Q A_k Q and the result is Q_4 ... Q_0 X_0. Per step
    4 m^3 instead of 2 m^2 n + m^3 multiply-adds, so it pays once n > 1.5 m. In bfloat16 the rounding errors
    of A grow unchecked (singular values of 40 where 1.2 is expected): float32 or wider only."""
    X, tall = normalised_wide(G, eps, dtype)
    A = torch.bmm(X, X.mT)  # (N, m, m)
    P = None  # Q_k ... Q_0
    for k, (a, b, c) in enumerate(schedule):
        Q = torch.baddbmm(A, A, A, beta=b, alpha=c)
        Q.diagonal(dim1=-2, dim2=-1).add_(a)
        P = Q if P is None else torch.bmm(Q, P)
        if k < len(schedule) - 1:
            A = torch.bmm(Q, torch.bmm(Q, A))
    X = X if P is None else torch.bmm(P, X)
    return X.mT if tall else X


def orthogonalise(G: Tensor, schedule: Schedule, eps: float, dtype: torch.dtype) -> Tensor:
    """G (N, rows, cols) orthogonalised: on the Gram matrix where that is cheaper and dtype holds it,
    otherwise as torch does."""
    m, n = sorted(G.shape[-2:])
    gram = dtype in (torch.float32, torch.float64) and n >= 2 * m
    zeropower = zeropower_via_gram_newtonschulz if gram else zeropower_via_newtonschulz
    return zeropower(G, schedule, eps, dtype)


def adjusted_lr(lr: float, adjust_lr_fn: str | None, shape: torch.Size) -> float:
    """torch.optim.Muon's step size for a rows x cols matrix: updates of every shape get a like RMS."""
    rows, cols = shape[:2]
    if adjust_lr_fn is None or adjust_lr_fn == "original":
        return lr * math.sqrt(max(1, rows / cols))
    if adjust_lr_fn == "match_rms_adamw":
        return lr * 0.2 * math.sqrt(max(rows, cols))
    return lr


def by_shape(params: list[Tensor]) -> dict[tuple[int, int], list[int]]:
    """Indices of params grouped by their shape lying down, (shorter side, longer side), in order: each group
    is one Newton-Schulz batch, a tall matrix iterated as its transpose (as torch iterates it)."""
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, p in enumerate(params):
        groups[tuple(sorted(p.shape))].append(i)
    return groups


def lying_down(M: Tensor) -> Tensor:
    """M, transposed if it is tall: (shorter side, longer side)."""
    return M.mT if M.size(-2) > M.size(-1) else M


class Muon(torch.optim.Muon):
    """torch.optim.Muon with the orthogonalisation batched per shape; ns_dtype: the iteration's dtype."""

    def __init__(self, params, *args, ns_dtype: torch.dtype = torch.bfloat16,
                 ns_schedule: Schedule | None = None, **kwargs) -> None:
        super().__init__(params, *args, **kwargs)
        # attributes, not group keys: loading a state_dict replaces the groups with the saved ones
        self.ns_dtype = ns_dtype
        self.ns_schedule = ns_schedule  # None: the group's ns_coefficients, ns_steps times, as torch
        self._stacks: dict[tuple[int, ...], tuple[Tensor, list[Tensor]]] = {}  # see _momentum_stack

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

    def _momentum_stack(self, params: list[Tensor]) -> Tensor:
        """The momentum buffers of same-shape params as one (N, m, n) stack, each lying down, so that momentum
        is one op per shape rather than one per matrix and the stack is the Newton-Schulz batch without a copy.
        state[p]["momentum_buffer"] stays torch's: a view of the stack in p's shape. After load_state_dict (or on
        the first step) the state's buffers are tensors of their own (or none): they are copied into a new stack."""
        key = tuple(id(p) for p in params)
        stack, views = self._stacks.get(key, (None, ()))
        if len(views) != len(params) or any(self.state[p].get("momentum_buffer") is not v
                                            for p, v in zip(params, views)):
            stack = torch.stack([lying_down(self.state[p].get("momentum_buffer", torch.zeros_like(p.grad)))
                                 for p in params])
            views = [m.mT if p.size(0) > p.size(1) else m for p, m in zip(params, stack.unbind(0))]
            for p, view in zip(params, views):
                self.state[p]["momentum_buffer"] = view
            self._stacks[key] = (stack, views)
        return stack

    def _step_group(self, group: dict, params: list[Tensor]) -> None:
        if any(p.grad.is_sparse or torch.is_complex(p.grad) for p in params):
            raise RuntimeError("Muon supports neither sparse gradients nor complex parameters")
        lr = float(group["lr"])  # a float, or a one-element tensor as torch allows
        if group["weight_decay"]:
            torch._foreach_mul_(params, 1 - lr * group["weight_decay"])
        schedule = self.ns_schedule or (tuple(group["ns_coefficients"]),) * group["ns_steps"]
        for idx in by_shape(params).values():
            same = [params[i] for i in idx]
            momentum = self._momentum_stack(same)
            grads = torch.stack([lying_down(p.grad) for p in same])  # a copy, which the Nesterov step may overwrite
            momentum.lerp_(grads, 1 - group["momentum"])
            updates = grads.lerp_(momentum, group["momentum"]) if group["nesterov"] else momentum
            # one cast of the batch, not one per matrix inside a mixed-dtype add (torch adds the bf16 update to
            # the fp32 weight in fp32 too: the same numbers)
            ortho = orthogonalise(updates, schedule, group["eps"], self.ns_dtype).to(same[0].dtype)
            for tall in (False, True):  # each with its own step size
                step = [(p, o.mT if tall else o) for p, o in zip(same, ortho.unbind(0))
                        if (p.size(0) > p.size(1)) == tall]
                if step:
                    torch._foreach_add_([p for p, _ in step], [o for _, o in step],
                                        alpha=-adjusted_lr(lr, group["adjust_lr_fn"], step[0][0].shape))
