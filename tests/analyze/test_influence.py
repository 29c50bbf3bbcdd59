"""Influence functions and Fisher information, checked against trusted references:

- the exact Hessian (torch.func.hessian over a flat parameter vector) and an exact linear solve,
- eigvalsh of the exact Hessian / exact empirical Fisher,
- per-sequence gradients from a plain autograd loop,
- actual leave-one-out retraining (LBFGS, float64, warm start from the full optimum),
and a smoke test of analyze_influence on a real tiny run of every family.
"""

from __future__ import annotations

import argparse
import inspect
import json
import math

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from conftest import family_params, missing_extra
from scipy.stats import pearsonr, spearmanr
from torch.func import functional_call

from picollm.analyze.influence import (
    HessianOperator,
    analyze_influence,
    conjugate_gradient,
    fisher_matvec,
    lanczos,
    layer_of,
    lissa,
    per_example_grads,
    power_iteration,
    select_params,
)
from picollm.analyze.settings import add_influence_args, influence_kwargs
from picollm.config import RunConfig
from picollm.models.kgram_mlp.config import KGramMLPConfig
from picollm.models.kgram_mlp.model import KGramMLP

V = 8  # vocabulary of the synthetic problems


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # tiny ops: threads only add synchronisation, and on a busy machine they make things far slower
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def markov_sequences(n: int, T: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n sequences of a random first-order Markov chain over V tokens: x, y (n, T)."""
    g = torch.Generator().manual_seed(seed)
    trans = torch.softmax(2.0 * torch.randn(V, V, generator=torch.Generator().manual_seed(123)), -1)
    seq = torch.empty(n, T + 1, dtype=torch.long)
    seq[:, 0] = torch.randint(V, (n,), generator=g)
    for t in range(T):
        seq[:, t + 1] = torch.multinomial(trans[seq[:, t]], 1, generator=g).squeeze(1)
    return seq[:, :-1], seq[:, 1:]


def tiny_kgram(inner_layers: int, embed: int, hidden: int = 4, seed: int = 0) -> KGramMLP:
    torch.manual_seed(seed)
    cfg = KGramMLPConfig(vocab_size=V, embed=embed, hidden=hidden, k=2, inner_layers=inner_layers, norm=False)
    model = KGramMLP(cfg).double().eval()
    torch.nn.init.normal_(model.embedding.weight, std=1.0)  # distinct features from the start
    return model


def flat_loss(model, names, shapes, fixed):
    """Reference per-sequence losses (B,) of a flat parameter vector, written independently of picollm.analyze.influence."""
    numels = [math.prod(s) for s in shapes]

    def loss(theta, x, y):
        p = {n: c.view(s) for n, c, s in zip(names, theta.split(numels), shapes)}
        logits, _ = functional_call(model, {**fixed, **p}, (x,))
        return F.cross_entropy(logits.transpose(1, 2), y, reduction="none").mean(1)

    return loss


def fit(loss_fn, theta, x, y, l2: float, weights: torch.Tensor | None = None, iters: int = 500) -> torch.Tensor:
    """argmin 1/n sum_i w_i L(z_i) + l2/2 ||theta||^2 by LBFGS (float64), starting from theta."""
    n = len(x)
    w = torch.ones(n, dtype=torch.float64) if weights is None else weights
    theta = theta.detach().clone().requires_grad_(True)
    opt = torch.optim.LBFGS([theta], lr=1.0, max_iter=iters, tolerance_grad=1e-12, tolerance_change=1e-14,
                            history_size=50, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        obj = (w * loss_fn(theta, x, y)).sum() / n + 0.5 * l2 * theta.pow(2).sum()
        obj.backward()
        return obj

    opt.step(closure)
    return theta.detach()


def setup_problem(inner_layers: int, embed: int, which: str, l2: float, n_train: int, T: int = 10, hidden: int = 4):
    model = tiny_kgram(inner_layers, embed, hidden)
    space, theta0 = select_params(model, which)
    loss_fn = flat_loss(model, space.names, space.shapes, space.fixed)
    x, y = markov_sequences(n_train, T, seed=1)
    xt, yt = markov_sequences(3, T, seed=2)
    theta = fit(loss_fn, theta0, x, y, l2)
    return model, space, loss_fn, theta, (x, y), (xt, yt)


# --------------------------------------------------------------------------------------------------
def test_fisher_diagonal_matches_loop_of_squared_gradients():
    model = tiny_kgram(inner_layers=1, embed=2)
    space, theta = select_params(model)
    x, y = markov_sequences(10, 7, seed=3)
    g = per_example_grads(model, space, theta, x, y, chunk_size=4)  # vmap over grad
    ref = []
    for i in range(len(x)):  # plain loop, nn.Module parameters, .backward()
        model.zero_grad()
        logits, _ = model(x[i:i + 1])
        F.cross_entropy(logits.flatten(0, 1), y[i]).backward()
        ref.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]))
    ref = torch.stack(ref)
    torch.testing.assert_close(g, ref)
    torch.testing.assert_close((g ** 2).mean(0), (ref ** 2).mean(0))


def test_lissa_and_cg_agree_with_exact_influence_and_eigenvalues():
    # embeddings x head is bilinear: rotating the embedding space (and the head with it) leaves every loss
    # unchanged, so at the L2 optimum H + l2 I is singular along that rotation; damp a little more than l2
    l2, damping = 0.05, 0.1
    model, space, loss_fn, theta, (x, y), (xt, yt) = setup_problem(0, 2, "all", l2, n_train=24)
    H = torch.func.hessian(lambda th: loss_fn(th, x, y).mean())(theta)  # (d, d) exact
    assert H.shape == (58, 58)
    hvp = HessianOperator(model, space, theta, x, y)
    v = torch.randn(3, space.dim, dtype=torch.float64)
    torch.testing.assert_close(hvp(v), v @ H)

    g_train = per_example_grads(model, space, theta, x, y)
    g_test = per_example_grads(model, space, theta, xt, yt)
    A = H + damping * torch.eye(len(H), dtype=H.dtype)
    exact = -g_test @ torch.linalg.solve(A, g_train.T)  # (n_test, n_train)
    eig_h = torch.linalg.eigvalsh(H)
    assert eig_h[0] + damping > 0.04, "at the L2 optimum H + l2 I is positive semi-definite"

    s_cg, _ = conjugate_gradient(hvp, g_test, damping, steps=200, tol=1e-10)
    s_li, info = lissa(hvp, g_test, damping, scale=1.05 * (eig_h[-1].item() + damping), steps=3000, tol=1e-8)
    s_fi = g_test / ((g_train ** 2).mean(0) + damping)
    for name, s in (("cg", s_cg), ("lissa", s_li), ("fisher-diag", s_fi)):
        est = -s @ g_train.T
        r = min(pearsonr(est[t], exact[t])[0] for t in range(len(exact)))
        print(f"\n{name}: min Pearson with exact influence over {len(exact)} test sequences = {r:.8f}")
        if name != "fisher-diag":  # the diagonal is the cheap approximation: reported, not asserted
            assert r >= 0.95

    # top eigenvalues of the Hessian and of the empirical Fisher from matrix-vector products alone
    top = lanczos(hvp, space.dim, steps=40).flip(0)[:3]
    err_h = ((top - eig_h.flip(0)[:3]).abs() / eig_h.flip(0)[:3].abs()).max().item()
    fisher = g_train.T @ g_train / len(g_train)
    eig_f = torch.linalg.eigvalsh(fisher).flip(0)[:3]
    top_f = lanczos(fisher_matvec(g_train), space.dim, steps=30).flip(0)[:3]
    pow_f = power_iteration(fisher_matvec(g_train), space.dim, k=3, steps=5000, tol=1e-13)
    err_f = ((top_f - eig_f).abs() / eig_f).max().item()
    err_p = ((pow_f - eig_f).abs() / eig_f).max().item()
    print(f"eigenvalue rel. errors: Hessian Lanczos {err_h:.2e}, Fisher Lanczos {err_f:.2e}, Fisher power {err_p:.2e}")
    assert err_h < 1e-3 and err_f < 1e-3 and err_p < 1e-3


def leave_one_out(inner_layers: int, embed: int, which: str, n_train: int, hidden: int = 4,
                  loo_iters: int = 200) -> list[float]:
    """Spearman between predicted and actual test-loss change of removing each training sequence."""
    l2 = 0.01
    model, space, loss_fn, theta, (x, y), (xt, yt) = setup_problem(inner_layers, embed, which, l2, n_train,
                                                                   hidden=hidden)
    hvp = HessianOperator(model, space, theta, x, y)
    g_train = per_example_grads(model, space, theta, x, y)
    g_test = per_example_grads(model, space, theta, xt, yt)
    # damping = the L2 coefficient: H + l2 I is then the Hessian of the training objective itself
    s, _ = conjugate_gradient(hvp, g_test, l2, steps=500, tol=1e-12)
    predicted = (s @ g_train.T) / n_train  # removing z: eps = -1/n, so delta test loss ~ -I / n
    base = loss_fn(theta, xt, yt).detach()
    actual = torch.empty(len(xt), n_train, dtype=torch.float64)
    for i in range(n_train):
        w = torch.ones(n_train, dtype=torch.float64)
        w[i] = 0.0
        th = fit(loss_fn, theta, x, y, l2, weights=w, iters=loo_iters)  # warm start from the full optimum
        with torch.no_grad():
            actual[:, i] = loss_fn(th, xt, yt) - base
    return [float(spearmanr(predicted[t], actual[t])[0]) for t in range(len(xt))]


def test_influence_ranks_leave_one_out_retraining_convex():
    # the head of a K-gram model over fixed embeddings is multinomial logistic regression: with L2 it is
    # strictly convex, so the optimum and every leave-one-out optimum are unique
    rho = leave_one_out(inner_layers=0, embed=4, which="head", n_train=30)
    print(f"\nconvex (log-linear head, 72 params): Spearman vs leave-one-out = {[round(r, 4) for r in rho]}")
    assert min(rho) >= 0.8


def test_influence_vs_leave_one_out_non_convex_reported():
    rho = leave_one_out(inner_layers=1, embed=3, which="all", n_train=30, hidden=6)
    print(f"\nnon-convex (one hidden layer, all params): Spearman vs leave-one-out = {[round(r, 4) for r in rho]}")
    assert all(math.isfinite(r) for r in rho)


def test_select_params_head_and_layers():
    cfg = RunConfig(model="lstm", embed=8, hidden=8, layers=2)
    from picollm.models import build_model

    model = build_model(cfg, 11)
    space, theta = select_params(model, "head")
    assert set(space.names) == {"embedding.weight", "head.bias"}  # tied: the shared matrix belongs to the head
    assert theta.numel() == 11 * 8 + 11
    assert layer_of("rnn.weight_hh_l1") == "rnn.l1"
    assert layer_of("blocks.0.attn.qkv.weight") == "blocks.0"
    assert layer_of("head.bias") == "head"


def test_flags_map_onto_analyze_influence():
    parser = argparse.ArgumentParser()
    add_influence_args(parser)
    args = parser.parse_args(["--influence", "--influence_n_train", "5", "--influence_method", "cg",
                              "--influence_steps", "7", "--influence_params", "head"])
    kw = influence_kwargs(args)
    assert args.influence and kw["n_train"] == 5 and kw["cg_steps"] == 7 and kw["params"] == "head"
    inspect.signature(analyze_influence).bind("run", "out", **kw, device="cpu")


# --------------------------------------------------------------------------------------------------
FAMILIES = family_params()  # every registered family


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    from picollm.data.corpora import load_splits
    from picollm.train.loop import train_run

    root = tmp_path_factory.mktemp("influence_runs")
    corpus = root / "tiny.txt"
    corpus.write_text(load_splits("tinyshakespeare")["train"][:20000])
    runs = {}
    for family in (p.id for p in FAMILIES if missing_extra(p.id) is None):
        cfg = RunConfig(model=family, corpus=str(corpus), block_size=16, batch_size=8, embed=16, hidden=16,
                        layers=2, heads=2, max_steps=10, eval_interval=10, eval_tokens=256, warmup_steps=2,
                        out_dir=str(root / "checkpoints"), progress=False)
        runs[family] = train_run(cfg, quiet=True)
    return runs


@pytest.mark.parametrize("family", FAMILIES)
def test_analyze_influence_writes_every_file(tiny_runs, tmp_path, family):
    method = {"kgram_mlp": "cg", "lstm": "fisher"}.get(family, "lissa")
    res = analyze_influence(tiny_runs[family], tmp_path, n_train=8, n_test=2, method=method, lissa_steps=10,
                            cg_steps=10, lanczos_steps=6, top_k=3, progress=False)
    print(f"\n{family} ({method}): {res['timings_s']['total']:.2f}s, {res['num_params_scored']} params")
    for name in ("fisher_layers.csv", "fisher_layers.png", "influence_top.csv", "influence.json"):
        assert (tmp_path / name).stat().st_size > 0, name
    fisher = pd.read_csv(tmp_path / "fisher_layers.csv")
    assert set(fisher["level"]) == {"tensor", "layer"}
    assert fisher.loc[fisher["level"] == "layer", "share_of_trace"].sum() == pytest.approx(1.0)
    assert fisher.loc[fisher["level"] == "tensor", "numel"].sum() == res["num_params_scored"]
    top = pd.read_csv(tmp_path / "influence_top.csv", keep_default_na=False)
    assert list(top.columns[:7]) == ["test_index", "test_text", "rank", "kind", "train_index", "train_text", "score"]
    assert len(top) > 0 and top["test_index"].nunique() == 2
    assert (top.loc[top["kind"] == "helpful", "score"] < 0).all()
    assert (top.loc[top["kind"] == "harmful", "score"] > 0).all()
    assert top["train_text"].str.len().gt(0).all()
    saved = json.loads((tmp_path / "influence.json").read_text())
    assert saved["fisher_trace"] > 0 and len(saved["hessian_top_eigenvalues"]) == 3
    assert saved["fisher_top_eigenvalues"][0] == pytest.approx(saved["fisher_top_eigenvalues_exact"][0], rel=1e-4)
