"""Fisher information and influence functions for a trained run.

    analyze_influence(run_dir, out_dir) -> dict   # writes fisher_layers.csv/.png, influence_top.csv, influence.json

Everything works on one flat parameter vector theta (d,) -- all trainable parameters, or a subset chosen by
`params` ("all", "head", or comma-separated name prefixes) -- which `functional_call` maps back onto the
model. A "sequence" z = (x, y) is one window of block_size + 1 tokens; its loss L(z) is the mean token
cross-entropy, computed with state=None, so every family is treated alike.

- Empirical Fisher F = 1/n sum_i g_i g_i^T from per-sequence gradients g_i = grad L(z_i) (vmap over grad).
  Reported: its diagonal per tensor / per layer, its trace (= mean ||g_i||^2) and its top eigenvalues.
- Hessian H of the mean training loss over the Hessian sample (by default the scored training sequences);
  Hessian-vector products by double backward. The gradient graph is built once and kept (retain_graph),
  so each H v costs one extra backward pass, not a forward and two backwards.
- Top eigenvalues by Lanczos with full reorthogonalisation (or power iteration with deflation) on
  matrix-vector products only.
- Influence (Koh & Liang 2017, "I_up,loss"):

      I(z, z_test) = -grad L(z_test)^T (H + damping I)^-1 grad L(z)

  is d L(z_test) / d eps when z's weight in the training loss goes from 1/n to 1/n + eps.
  SIGN CONVENTION: removing z (eps = -1/n) changes the test loss by about -I / n, so
  score < 0: "helpful" (training on z lowers the test loss), score > 0: "harmful" (it raises it).
  (H + damping I)^-1 is applied to the few test gradients (not to the many training gradients) by
  LiSSA, conjugate gradients, or -- the cheap option -- the diagonal of the Fisher ("fisher").

Damping plays the role of an L2 penalty: with damping = lambda, H + lambda I is exactly the Hessian of
"mean loss + lambda/2 ||theta||^2". LiSSA and CG need H + damping I positive definite; a model that is
not at a minimum (a short run) has negative curvature, so when Lanczos finds a smallest eigenvalue below
-damping the damping is raised to just above it (recorded as `damping_used`, with a warning).
"""

from __future__ import annotations

import math
import re
import time
import warnings
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap
from tqdm.auto import tqdm

from picollm.analyze.settings import InfluenceSettings
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
TWICE_DIFFERENTIABLE = [("picollm.models.xlstm", "slstm_scan", "slstm_scan_reference")]


@contextmanager
def autodiff_context():
    """Settings under which every family supports vmap and double backward: SDPA's math kernel (the
    fused CPU attention kernel has no double backward), the stand-ins of TWICE_DIFFERENTIABLE; and
    functorch's "no batching rule" notes silenced."""
    import importlib

    from torch.nn.attention import SDPBackend, sdpa_kernel

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


# --------------------------------------------------------------------------------------------------
# Fisher summary
# --------------------------------------------------------------------------------------------------
def layer_of(name: str) -> str:
    """Group a parameter into its layer: up to the first index ("blocks.0.attn.qkv.weight" -> "blocks.0",
    "mlp.0.weight" -> "mlp.0"), the LSTM's per-layer tensors by their suffix ("rnn.weight_ih_l1" ->
    "rnn.l1"), else the top module ("head.weight" -> "head")."""
    parts = name.split(".")
    for i, part in enumerate(parts):
        if part.isdigit():
            return ".".join(parts[: i + 1])
    m = re.search(r"_l(\d+)(_reverse)?$", parts[-1])
    if m:
        return ".".join(parts[:-1] + [f"l{m[1]}"])
    return parts[0] if len(parts) > 1 else name


def fisher_table(space: ParamSpace, fisher_diag: Tensor) -> pd.DataFrame:
    """Per-tensor and per-layer rows: numel, sum and mean of the Fisher diagonal, share of the trace."""
    trace = fisher_diag.sum().item()
    rows = []
    for name, diag in space.split(fisher_diag).items():
        rows.append({"level": "tensor", "name": name, "layer": layer_of(name), "numel": diag.numel(),
                     "fisher_sum": diag.sum().item(), "fisher_max": diag.max().item()})
    df = pd.DataFrame(rows)
    layers = df.groupby("layer", sort=False).agg(numel=("numel", "sum"), fisher_sum=("fisher_sum", "sum"),
                                                 fisher_max=("fisher_max", "max")).reset_index()
    layers = layers.assign(level="layer", name=layers["layer"])
    df = pd.concat([df, layers], ignore_index=True)
    df["fisher_mean"] = df["fisher_sum"] / df["numel"]
    df["share_of_trace"] = df["fisher_sum"] / trace if trace > 0 else 0.0
    return df[["level", "name", "layer", "numel", "fisher_sum", "fisher_mean", "fisher_max", "share_of_trace"]]


def plot_fisher(table: pd.DataFrame, path: Path, title: str = "") -> None:
    """Two panels per layer: share of the Fisher trace, and the mean Fisher diagonal (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = table[table["level"] == "layer"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 0.35 * len(layers) + 1.6), sharey=True)
    y = range(len(layers))
    axes[0].barh(y, layers["share_of_trace"], color="tab:blue")
    axes[0].set_xlabel("share of Fisher trace")
    axes[0].set_yticks(list(y), layers["name"])
    axes[0].invert_yaxis()
    axes[1].barh(y, layers["fisher_mean"].clip(lower=1e-30), color="tab:orange")
    axes[1].set_xscale("log")
    axes[1].set_xlabel("mean Fisher diagonal per parameter")
    fig.suptitle(title or "empirical Fisher diagonal per layer")
    fig.tight_layout()
    from picollm.core.atomic import atomic_write

    atomic_write(Path(path), lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)


# --------------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------------
def sample_windows(data: Tensor, n: int, block_size: int, seed: int) -> tuple[Tensor, Tensor, Tensor]:
    """n windows of block_size + 1 tokens: starts (n,), x (n, T), y (n, T). Windows sit on a grid of stride
    T, so they do not share targets (sampled with replacement only when the split is too short)."""
    gen = torch.Generator().manual_seed(seed)
    slots = (data.numel() - 1) // block_size
    if slots < 1:
        raise ConfigError(f"a split of {data.numel()} tokens is too short for --block_size {block_size}")
    if n <= slots:
        starts = torch.randperm(slots, generator=gen)[:n].sort().values * block_size
    else:
        starts = torch.randint(data.numel() - block_size, (n,), generator=gen).sort().values
    chunk = data[starts[:, None] + torch.arange(block_size + 1)]  # (n, T+1)
    return starts, chunk[:, :-1], chunk[:, 1:]


# --------------------------------------------------------------------------------------------------
# the entry point
# --------------------------------------------------------------------------------------------------
class _Laps:
    """Wall seconds of each stage, for influence.json."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self.start = self.tic = time.perf_counter()

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        self.timings[name] = round(now - self.tic, 3)
        self.tic = now

    def total(self) -> dict[str, float]:
        return {**self.timings, "total": round(time.perf_counter() - self.start, 3)}


def solve_ihvp(hvp: MatVec, b: Tensor, fisher_diag: Tensor, st: InfluenceSettings, lam_min: float, lam_max: float,
               run_name: str, progress: bool = True) -> tuple[Tensor, dict[str, Any], float]:
    """(H + damping I)^-1 b by the chosen method; returns the solution, the solver's info and the damping used
    (raised above -lambda_min when H has negative curvature, or LiSSA / CG would diverge)."""
    damping = st.damping
    if st.method != "fisher" and lam_min + damping <= 0:
        damping = st.damping - 1.1 * lam_min  # Ritz values lie inside the spectrum: add a margin
        log.warning(f"{run_name}: the Hessian has negative curvature (lambda_min ~ {lam_min:.3g}); damping "
                    f"raised from {st.damping:g} to {damping:.3g} so that LiSSA / CG converge")
    if st.method == "cg":
        ihvp, info = conjugate_gradient(hvp, b, damping, st.cg_steps, progress=progress)
    elif st.method == "lissa":
        ihvp, info = lissa(hvp, b, damping, scale=1.05 * (lam_max + damping), steps=st.lissa_steps,
                           progress=progress)
    else:
        ihvp, info = b / (fisher_diag.to(b) + damping), {}
    return ihvp, info, damping


def ranked_rows(scores: Tensor, top_k: int, window_text: Callable[[str, int], str], train_starts: Tensor,
                test_starts: Tensor, loss_train: Tensor, loss_test: Tensor) -> list[dict[str, Any]]:
    """influence_top.csv: per test window, its top_k most helpful (most negative score) and most harmful
    training windows."""
    rows = []
    for t in range(scores.size(0)):
        order = scores[t].argsort()
        ranked = {"helpful": [i for i in order.tolist() if scores[t, i] < 0][:top_k],
                  "harmful": [i for i in order.flip(0).tolist() if scores[t, i] > 0][:top_k]}
        for kind, idx in ranked.items():
            for rank, i in enumerate(idx, 1):
                rows.append({"test_index": int(test_starts[t]), "test_text": window_text("test", t),
                             "rank": rank, "kind": kind, "train_index": int(train_starts[i]),
                             "train_text": window_text("train", i), "score": scores[t, i].item(),
                             "test_loss": loss_test[t].item(), "train_loss": loss_train[i].item()})
    return rows


INFLUENCE_COLUMNS = ["test_index", "test_text", "rank", "kind", "train_index", "train_text", "score", "test_loss",
                     "train_loss"]


def write_top(out_dir: Path, rows: list[dict[str, Any]]) -> None:
    from picollm.core.atomic import atomic_write_text

    atomic_write_text(out_dir / "influence_top.csv", pd.DataFrame(rows, columns=INFLUENCE_COLUMNS).to_csv(index=False))


def analyze_influence(run_dir: str | Path, out_dir: str | Path, *, which: str = "best", device: str = "cpu",
                      progress: bool = True, **settings: Any) -> dict[str, Any]:
    """Fisher information and influence of n_train random training windows on n_test test windows (block_size
    + 1 tokens each) for one trained run; settings: InfluenceSettings fields. H is the Hessian of the mean loss
    over the first n_hessian scored training windows (0 = all). Writes fisher_layers.csv / .png,
    influence_top.csv and influence.json into out_dir and returns what influence.json holds (the sign
    convention: the module docstring)."""
    from picollm.core.atomic import atomic_write_json, atomic_write_text
    from picollm.data import batching as data_mod
    from picollm.runs.checkpoint import load_run

    st = InfluenceSettings(**settings)
    laps = _Laps()
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg, tokenizer, model, _ = load_run(run_dir, which, device=device)
    dtype = {"float32": torch.float32, "float64": torch.float64}[st.dtype]
    model = model.to(dtype).eval()  # eval: no dropout, so the loss is a deterministic function of theta
    _, splits = data_mod.prepare_data(cfg.corpus, cfg.resolved().tokenizer, cfg.bpe_vocab_size, tokenizer=tokenizer)
    T = cfg.block_size
    starts: dict[str, Tensor] = {}
    starts["train"], x_train, y_train = sample_windows(splits["train"], st.n_train, T, st.seed)
    starts["test"], x_test, y_test = sample_windows(splits["test"], st.n_test, T, st.seed + 1)
    x_train, y_train, x_test, y_test = (t.to(device) for t in (x_train, y_train, x_test, y_test))
    space, theta = select_params(model, st.params)
    laps("load")

    g_train = per_example_grads(model, space, theta, x_train, y_train, progress=progress)  # (n_train, d)
    g_test = per_example_grads(model, space, theta, x_test, y_test, progress=progress)  # (n_test, d)
    loss_train = sequence_losses(model, space, theta, x_train, y_train)
    loss_test = sequence_losses(model, space, theta, x_test, y_test)
    laps("per_sequence_grads")

    g64 = g_train.double()
    fisher_diag = (g64 ** 2).mean(0)  # (d,): diag of 1/n sum g g^T
    table = fisher_table(space, fisher_diag)
    atomic_write_text(out_dir / "fisher_layers.csv", table.to_csv(index=False))
    plot_fisher(table, out_dir / "fisher_layers.png", f"{run_dir.name}: empirical Fisher diagonal ({st.params})")
    fisher_ritz = lanczos(fisher_matvec(g64), space.dim, st.lanczos_steps, device=device, seed=st.seed,
                          progress=progress)
    fisher_gram = torch.linalg.eigvalsh((g64 @ g64.T).cpu() / st.n_train)  # same nonzero spectrum, n x n: exact
    laps("fisher")

    nh = st.n_hessian or st.n_train
    hvp = HessianOperator(model, space, theta, x_train[:nh], y_train[:nh])
    hess_ritz = lanczos(hvp, space.dim, st.lanczos_steps, device=device, seed=st.seed, progress=progress)
    laps("hessian_eigs")

    lam_max, lam_min = hess_ritz[-1].item(), hess_ritz[0].item()
    b = g_test.to(dtype)
    ihvp, info, damping_used = solve_ihvp(hvp, b, fisher_diag, st, lam_min, lam_max, run_dir.name, progress)
    # how well (H + damping I) x = g_test was solved (for "fisher": how far the diagonal is from H)
    residual = ((hvp(ihvp) + damping_used * ihvp - b).norm(dim=-1) / b.norm(dim=-1).clamp_min(1e-30)).tolist()
    scores = influence_scores(g_train.to(dtype), ihvp).double().cpu()  # (n_test, n_train)
    laps("influence")

    window_text = lambda split, i: tokenizer.decode(splits[split][starts[split][i]: starts[split][i] + T + 1])
    write_top(out_dir, ranked_rows(scores, st.top_k, window_text, starts["train"], starts["test"], loss_train,
                                   loss_test))
    laps("write")

    k = min(st.n_eigs, len(hess_ritz))
    result = {
        "run": run_dir.name, "model": cfg.model, "checkpoint": which,
        "settings": {**vars(st), "n_hessian": nh, "device": device, "block_size": T},
        "num_params_scored": space.dim, "param_tensors": space.names,
        "fisher_trace": fisher_diag.sum().item(),
        "fisher_top_eigenvalues": fisher_ritz.flip(0)[:k].tolist(),
        "fisher_top_eigenvalues_exact": fisher_gram.flip(0)[:k].tolist(),
        "hessian_top_eigenvalues": hess_ritz.flip(0)[:k].tolist(),
        "hessian_min_ritz_value": lam_min,
        "damping_used": damping_used,
        "solver": {**info, "relative_residual": residual, "hvp_calls": hvp.calls},
        "train_loss_mean": loss_train.mean().item(), "test_losses": loss_test.tolist(),
        "score_convention": "score = I(z, z_test) = -g_test^T (H + damping I)^-1 g_z; "
                            "< 0 helpful (training on z lowers the test loss), > 0 harmful",
        "timings_s": laps.total(),
    }
    atomic_write_json(out_dir / "influence.json", result)
    return result
