"""The loss's gradients and curvature over a flat parameter vector, as matrix-vector products only: the
machinery of picollm.analyze.influence.

- ParamSpace / select_params: the chosen parameters laid end to end in one vector theta (d,), which
  `functional_call` maps back onto the model.
- per_example_grads (vmap over grad), HessianOperator (H v by double backward over a kept gradient graph),
  fisher_matvec (the empirical Fisher from per-sequence gradients).
- lanczos / power_iteration: top eigenvalues; conjugate_gradient / lissa: (A + damping I)^-1 applied to a few
  vectors; influence_scores.
"""

from __future__ import annotations

import importlib
import math
import warnings
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap
from torch.nn.attention import SDPBackend, sdpa_kernel
from tqdm.auto import tqdm

from picollm.core.errors import ConfigError
from picollm.core.log import get_logger

log = get_logger()

MatVec = Callable[[Tensor], Tensor]  # (r, d) -> (r, d): one product per row


# --------------------------------------------------------------------------------------------------
# parameters as one flat vector
# --------------------------------------------------------------------------------------------------
@dataclass
class ParamSpace:
    """The chosen parameter tensors laid end to end in one vector; the others stay fixed."""

    names: list[str]
    shapes: list[torch.Size]
    fixed: dict[str, Tensor]
    """the parameters that are not differentiated (detached)"""

    @property
    def numels(self) -> list[int]:
        return [math.prod(s) for s in self.shapes]

    @property
    def dim(self) -> int:
        return sum(self.numels)

    def unflatten(self, theta: Tensor) -> dict[str, Tensor]:
        """theta (d,) -> {name: view of theta with the parameter's shape}, plus the fixed parameters."""
        chunks = theta.split(self.numels)
        return {**self.fixed, **{n: c.view(s) for n, c, s in zip(self.names, chunks, self.shapes)}}

    def split(self, flat: Tensor) -> dict[str, Tensor]:
        """flat (..., d) -> {name: (..., numel)} for per-tensor summaries."""
        return dict(zip(self.names, flat.split(self.numels, dim=-1)))


HEAD_NAMES = ("head.", "lm_head.")  # the output projections of the four families


def select_params(model: nn.Module, which: str = "all") -> tuple[ParamSpace, Tensor]:
    """(space, theta0 (d,)) for `which`: "all" trainable parameters, "head" (the output projection; with tied
    weights that includes the whole shared embedding matrix), or comma-separated name prefixes."""
    # tied weights appear once under their first name; map every alias to it so "head" finds a tied matrix
    canonical = {id(p): n for n, p in model.named_parameters()}
    aliases: dict[str, list[str]] = {n: [] for n in canonical.values()}
    for n, p in model.named_parameters(remove_duplicate=False):
        aliases[canonical[id(p)]].append(n)
    if which == "all":
        prefixes: tuple[str, ...] = ("",)
    elif which == "head":
        prefixes = HEAD_NAMES
    else:
        prefixes = tuple(s.strip() for s in which.split(",") if s.strip())
    params = dict(model.named_parameters())
    chosen = [n for n in params if params[n].requires_grad and any(a.startswith(prefixes) for a in aliases[n])]
    if not chosen:
        raise ConfigError(f"--influence_params {which!r} matches no parameter; names: {', '.join(params)}")
    fixed = {n: p.detach() for n, p in params.items() if n not in chosen}
    space = ParamSpace(chosen, [params[n].shape for n in chosen], fixed)
    theta0 = torch.cat([params[n].detach().reshape(-1) for n in chosen])
    return space, theta0


# --------------------------------------------------------------------------------------------------
# losses and gradients
# --------------------------------------------------------------------------------------------------
#: (module, function, plain-autograd stand-in): functions whose hand-written backward (a custom
#: autograd.Function, fast for training) cannot be differentiated twice or vmapped; the stand-in computes
#: the same values with ordinary differentiable ops and is swapped in while influence runs
TWICE_DIFFERENTIABLE = [("picollm.models.xlstm.model", "slstm_scan", "slstm_scan_reference")]


@contextmanager
def autodiff_context():
    """Settings under which every family supports vmap and double backward: SDPA's math kernel (the
    fused CPU attention kernel has no double backward), the stand-ins of TWICE_DIFFERENTIABLE; and
    functorch's "no batching rule" notes silenced."""
    swapped = []
    for module_name, name, standin in TWICE_DIFFERENTIABLE:
        module = importlib.import_module(module_name)
        if hasattr(module, name) and hasattr(module, standin):
            swapped.append((module, name, getattr(module, name)))
            setattr(module, name, getattr(module, standin))
    try:
        with sdpa_kernel(SDPBackend.MATH), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*batching rule.*")
            yield
    finally:
        for module, name, original in swapped:
            setattr(module, name, original)


def batch_loss(model: nn.Module, space: ParamSpace, theta: Tensor, x: Tensor, y: Tensor) -> Tensor:
    """Mean token cross-entropy of x, y (B, T) at parameters theta (d,), every sequence from state None."""
    logits, _ = functional_call(model, space.unflatten(theta), (x,))  # (B, T, V)
    return F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())


def sequence_losses(model: nn.Module, space: ParamSpace, theta: Tensor, x: Tensor, y: Tensor) -> Tensor:
    """(B,) mean token loss of each sequence."""
    with torch.no_grad():
        logits, _ = functional_call(model, space.unflatten(theta), (x,))
        return F.cross_entropy(logits.transpose(1, 2).float(), y, reduction="none").mean(1)


def _uses_fused_rnn(model: nn.Module) -> bool:
    return any(isinstance(m, nn.RNNBase) for m in model.modules())


def per_example_grads(model: nn.Module, space: ParamSpace, theta: Tensor, x: Tensor, y: Tensor,
                      chunk_size: int = 16, progress: bool = False) -> Tensor:
    """(n, d) gradient of each sequence's mean loss; x, y (n, T).

    vmap over grad, chunk_size sequences at a time; a plain loop for nn.LSTM, whose fused CPU kernel
    has no batching rule (vmap's fallback is slower than a loop) -- and whenever vmap fails."""

    def one(th: Tensor, xi: Tensor, yi: Tensor) -> Tensor:
        return batch_loss(model, space, th, xi[None], yi[None])

    theta = theta.detach()
    out = []
    use_vmap = not _uses_fused_rnn(model)
    with autodiff_context():
        for i in tqdm(range(0, len(x), chunk_size), desc="per-sequence grads", disable=not progress, leave=False):
            xs, ys = x[i:i + chunk_size], y[i:i + chunk_size]
            if use_vmap:
                try:
                    out.append(vmap(grad(one), in_dims=(None, 0, 0))(theta, xs, ys))
                    continue
                except RuntimeError as e:  # an op without a batching rule that also breaks the fallback
                    log.warning(f"vmap over grad failed ({str(e).splitlines()[0]}); looping over sequences")
                    use_vmap = False
            th = theta.clone().requires_grad_(True)
            out.append(torch.stack([torch.autograd.grad(one(th, xi, yi), th)[0] for xi, yi in zip(xs, ys)]))
    return torch.cat(out)


class HessianOperator:
    """v -> H v for H = Hessian (d, d) of the mean loss over x, y (n, T) at theta.

    The gradient is computed once with create_graph=True and its graph kept, so every product is a
    single backward pass through it (double backward). chunk_size sequences per graph bounds memory."""

    def __init__(self, model: nn.Module, space: ParamSpace, theta: Tensor, x: Tensor, y: Tensor,
                 chunk_size: int = 64):
        self.theta = theta.detach().clone().requires_grad_(True)
        self.grads, self.weights = [], []
        with autodiff_context():
            for i in range(0, len(x), chunk_size):
                loss = batch_loss(model, space, self.theta, x[i:i + chunk_size], y[i:i + chunk_size])
                self.grads.append(torch.autograd.grad(loss, self.theta, create_graph=True)[0])
                self.weights.append(len(x[i:i + chunk_size]) / len(x))  # equal-length sequences: mean of means
        self.calls = 0

    def __call__(self, v: Tensor) -> Tensor:
        """v (d,) or (r, d) -> H v, same shape."""
        rows = v.reshape(-1, v.shape[-1]).to(self.theta.dtype)
        out = torch.zeros_like(rows)
        with autodiff_context():
            for g, w in zip(self.grads, self.weights):
                for j, row in enumerate(rows):
                    out[j] += w * torch.autograd.grad(g, self.theta, row, retain_graph=True)[0]
        self.calls += len(rows)
        return out.reshape(v.shape).to(v.dtype)


def fisher_matvec(g: Tensor) -> MatVec:
    """v -> F v with F = g^T g / n the empirical Fisher of per-sequence gradients g (n, d)."""
    return lambda v: (v @ g.T) @ g / len(g)


# --------------------------------------------------------------------------------------------------
# eigenvalues from matrix-vector products
# --------------------------------------------------------------------------------------------------
def lanczos(matvec: MatVec, dim: int, steps: int = 30, *, dtype: torch.dtype = torch.float64,
            device: str | torch.device = "cpu", seed: int = 0, progress: bool = False) -> Tensor:
    """Ritz values (ascending) of a symmetric operator after min(steps, dim) Lanczos steps.

    Full reorthogonalisation (twice, "twice is enough") keeps the basis orthogonal in finite precision,
    so no ghost copies of converged eigenvalues appear; the extreme Ritz values converge first."""
    steps = min(steps, dim)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    q = torch.randn(dim, generator=gen, dtype=dtype).to(device)
    basis = [q / q.norm()]
    alphas, betas = [], []
    for _ in tqdm(range(steps), desc="lanczos", disable=not progress, leave=False):
        w = matvec(basis[-1]).to(dtype)
        alphas.append(torch.dot(w, basis[-1]))
        Q = torch.stack(basis)  # (j, d)
        for _ in range(2):
            w = w - Q.T @ (Q @ w)
        beta = w.norm()
        if len(alphas) == steps or beta <= 1e-10 * max(1.0, abs(alphas[-1].item())):  # Krylov space exhausted
            break
        betas.append(beta)
        basis.append(w / beta)
    T = torch.diag(torch.stack(alphas))
    if betas:
        off = torch.stack(betas[: len(alphas) - 1])
        T = T + torch.diag(off, 1) + torch.diag(off, -1)
    return torch.linalg.eigvalsh(T.cpu())


def power_iteration(matvec: MatVec, dim: int, k: int = 3, steps: int = 200, tol: float = 1e-8, *,
                    dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu", seed: int = 0) -> Tensor:
    """The k largest-magnitude eigenvalues by power iteration, deflating the ones already found."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    vals: list[Tensor] = []
    vecs: list[Tensor] = []

    def deflated(v: Tensor) -> Tensor:
        w = matvec(v).to(dtype)
        for lam, u in zip(vals, vecs):
            w = w - lam * torch.dot(u, v) * u
        return w

    for _ in range(k):
        v = torch.randn(dim, generator=gen, dtype=dtype).to(device)
        v = v / v.norm()
        lam = torch.zeros((), dtype=dtype, device=device)
        for _ in range(steps):
            w = deflated(v)
            new = torch.dot(v, w)  # Rayleigh quotient
            v = w / w.norm()
            done = abs(new - lam) <= tol * abs(new)
            lam = new
            if done:
                break
        vals.append(lam)
        vecs.append(v)
    return torch.stack(vals)


# --------------------------------------------------------------------------------------------------
# (H + damping I)^-1 applied to a few vectors
# --------------------------------------------------------------------------------------------------
def _rowdot(a: Tensor, b: Tensor) -> Tensor:
    return (a * b).sum(-1, keepdim=True)  # (r, 1)


def conjugate_gradient(matvec: MatVec, b: Tensor, damping: float, steps: int = 100, tol: float = 1e-4,
                       progress: bool = False) -> tuple[Tensor, dict[str, Any]]:
    """Solve (A + damping I) x = b for each row of b (r, d); A symmetric positive semi-definite.

    Rows run in lockstep; a row stops when its residual drops below tol * ||b|| or when it meets
    non-positive curvature (A + damping I not positive definite along p)."""
    x = torch.zeros_like(b)
    r = b.clone()
    p = r.clone()
    rs = _rowdot(r, r)
    active = torch.ones(len(b), 1, dtype=torch.bool, device=b.device)
    bnorm = b.norm(dim=-1, keepdim=True).clamp_min(1e-30)
    it = 0
    for _ in tqdm(range(steps), desc="conjugate gradients", disable=not progress, leave=False):
        it += 1
        Ap = matvec(p) + damping * p
        pAp = _rowdot(p, Ap)
        active = active & (pAp > 0)
        alpha = torch.where(active, rs / pAp.clamp_min(1e-30), torch.zeros_like(rs))
        x = x + alpha * p
        r = r - alpha * Ap
        rs_new = _rowdot(r, r)
        active = active & (rs_new.sqrt() > tol * bnorm)
        if not active.any():
            break
        p = r + (rs_new / rs.clamp_min(1e-30)) * p
        rs = rs_new
    return x, {"iterations": it}


def lissa(matvec: MatVec, b: Tensor, damping: float, scale: float, steps: int = 100, tol: float = 1e-3,
          progress: bool = False) -> tuple[Tensor, dict[str, Any]]:
    """LiSSA (Agarwal et al. 2017): the truncated Neumann series for (A + damping I)^-1 b, rows of b (r, d).

        v_{j+1} = b + (I - (A + damping I) / scale) v_j  ->  scale (A + damping I)^-1 b

    It converges when every eigenvalue of A + damping I lies in (0, 2 scale); scale = lambda_max + damping
    is safe. Here the products use the whole Hessian sample (the deterministic version of the method).
    Stops early once every row's step, which is its residual b - (A + damping I) v / scale, is below tol ||b||."""
    v = b.clone()
    bnorm = b.norm(dim=-1).clamp_min(1e-30)
    it = 0
    for _ in tqdm(range(steps), desc="lissa", disable=not progress, leave=False):
        it += 1
        step = b - (matvec(v) + damping * v) / scale
        v = v + step
        if not torch.isfinite(v).all():
            log.warning("LiSSA diverged (H + damping I is not positive definite, or scale is too small)")
            break
        if (step.norm(dim=-1) <= tol * bnorm).all():
            break
    return v / scale, {"iterations": it, "scale": scale}


def influence_scores(train_grads: Tensor, ihvp_test: Tensor) -> Tensor:
    """(n_test, n_train) I(z, z_test) = -g_test^T (H + damping I)^-1 g_z, from ihvp_test (n_test, d) =
    (H + damping I)^-1 g_test (H is symmetric) and train_grads (n_train, d). Negative = helpful."""
    return -ihvp_test @ train_grads.T
