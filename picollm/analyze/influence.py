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

The gradients, Hessian-vector products, eigenvalue and solver routines are in picollm.analyze.curvature;
this module holds the Fisher summary, the settings, analyze_influence and its flags.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import Tensor

from picollm.analyze.curvature import (
    TWICE_DIFFERENTIABLE,
    HessianOperator,
    MatVec,
    ParamSpace,
    autodiff_context,
    batch_loss,
    conjugate_gradient,
    fisher_matvec,
    influence_scores,
    lanczos,
    lissa,
    per_example_grads,
    power_iteration,
    select_params,
    sequence_losses,
)
from picollm.analyze.settings import METHODS, InfluenceSettings, add_influence_args, influence_kwargs
from picollm.core.atomic import atomic_write, atomic_write_json, atomic_write_text
from picollm.core.errors import ConfigError
from picollm.core.log import get_logger
from picollm.data import batching as data_mod
from picollm.runs.checkpoint import load_run
from picollm.runs.portable import require_corpus

#: the module's names, with the machinery it is built on (picollm.analyze.curvature) that it always exported
__all__ = ["METHODS", "InfluenceSettings", "add_influence_args", "analyze_influence", "fisher_table",
           "influence_kwargs", "layer_of", "plot_fisher", "ranked_rows", "sample_windows", "solve_ihvp", "write_influence_top",
           "TWICE_DIFFERENTIABLE", "HessianOperator", "MatVec", "ParamSpace", "autodiff_context", "batch_loss",
           "conjugate_gradient", "fisher_matvec", "influence_scores", "lanczos", "lissa", "per_example_grads",
           "power_iteration", "select_params", "sequence_losses"]

log = get_logger()


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
    from matplotlib.figure import Figure  # only where a plot is drawn; no pyplot: no global backend switch

    layers = table[table["level"] == "layer"]
    fig = Figure(figsize=(10, 0.35 * len(layers) + 1.6))
    axes = fig.subplots(1, 2, sharey=True)
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
    atomic_write(Path(path), lambda f: fig.savefig(f, format="png", dpi=110))


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


def write_influence_top(out_dir: Path, rows: list[dict[str, Any]]) -> None:
    atomic_write_text(out_dir / "influence_top.csv", pd.DataFrame(rows, columns=INFLUENCE_COLUMNS).to_csv(index=False))


def analyze_influence(run_dir: str | Path, out_dir: str | Path, *, which: str = "best", device: str = "cpu",
                      progress: bool = True, **settings: Any) -> dict[str, Any]:
    """Fisher information and influence of n_train random training windows on n_test test windows (block_size
    + 1 tokens each) for one trained run; settings: InfluenceSettings fields. H is the Hessian of the mean loss
    over the first n_hessian scored training windows (0 = all). Writes fisher_layers.csv / .png,
    influence_top.csv and influence.json into out_dir and returns what influence.json holds (the sign
    convention: the module docstring)."""
    st = InfluenceSettings(**settings)
    laps = _Laps()
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg, tokenizer, model, _ = load_run(run_dir, which, device=device)
    require_corpus(Path(run_dir), cfg)
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
    write_influence_top(out_dir, ranked_rows(scores, st.top_k, window_text, starts["train"], starts["test"], loss_train,
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
