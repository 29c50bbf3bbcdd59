"""xLSTM: the three mLSTM forms against each other, the stabilised cells against naive unstabilised
float64 references, stepping against a full forward, training, state round-trips, config errors."""

from __future__ import annotations

import io
import math

import pytest
import torch
import torch.nn.functional as F

from picollm.core.errors import ConfigError
from picollm.models.base import detach_state
from picollm.models.xlstm.config import XLSTMConfig, slstm_positions
from picollm.models.xlstm.model import XLSTM, mlstm_chunkwise, mlstm_parallel, mlstm_recurrent, slstm_scan

RATIOS = ["1:0", "1:1", "0:1"]


def make_model(ratio: str, seed: int = 0, jitter: float = 0.05, **kw) -> XLSTM:
    """A tiny model whose parameters are perturbed, so that the zero-initialised recurrent kernels and gate
    weights take part in the comparisons."""
    torch.manual_seed(seed)
    args = dict(vocab_size=11, embed=16, hidden=32, layers=2, heads=4, xlstm_ratio=ratio) | kw
    model = XLSTM(XLSTMConfig(**args))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(jitter * torch.randn_like(p))
    return model.eval()


# ---------------------------------------------------------------------------------------------------------
# whole model: stepping and carried state
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ratio", RATIOS)
def test_step_by_step_equals_full_forward(ratio):
    model = make_model(ratio)
    model.set_mlstm_backend("chunkwise", chunk_size=8)  # 30 tokens: 4 chunks, the last one partial
    idx = torch.randint(0, 11, (3, 30), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full, _ = model(idx)
        state, steps = None, []
        for t in range(idx.shape[1]):
            logits, state = model(idx[:, t : t + 1], state)
            steps.append(logits)
    assert full.shape == (3, 30, 11)
    assert (full - torch.cat(steps, dim=1)).abs().max().item() <= 1e-5


@pytest.mark.parametrize("ratio", RATIOS)
def test_split_forward_with_carried_state_equals_full(ratio):
    model = make_model(ratio, seed=2)
    model.set_mlstm_backend("chunkwise", chunk_size=8)
    idx = torch.randint(0, 11, (2, 29), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        full, full_state = model(idx)
        first, state = model(idx[:, :13])
        second, state = model(idx[:, 13:], state)
    assert (torch.cat([first, second], dim=1) - full).abs().max().item() <= 1e-5
    for a, b in zip(full_state, state, strict=True):
        for x, y in zip(a, b, strict=True):
            torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-4)


def test_mlstm_backends_agree_in_the_model():
    model = make_model("1:1", seed=4)
    idx = torch.randint(0, 11, (2, 21), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        model.set_mlstm_backend("chunkwise", chunk_size=64)
        ref, _ = model(idx)
        for backend, chunk in [("parallel", None), ("recurrent", None), ("chunkwise", 5)]:
            model.set_mlstm_backend(backend, chunk)
            out, _ = model(idx)
            assert (out - ref).abs().max().item() <= 1e-5, backend
            _, state = model(idx[:, :10])  # the parallel form continuing from a state: one chunk
            out2, _ = model(idx[:, 10:], state)
            assert (out2 - ref[:, 10:]).abs().max().item() <= 1e-5, backend


def test_state_survives_save_and_load():
    model = make_model("1:1", seed=6)
    idx = torch.randint(0, 11, (2, 12), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        _, state = model(idx[:, :7])
        expected, _ = model(idx[:, 7:], state)
        buf = io.BytesIO()
        torch.save(detach_state(state), buf)
        buf.seek(0)
        loaded = torch.load(buf, weights_only=True)
        got, _ = model(idx[:, 7:], loaded)
    assert isinstance(loaded, list) and all(isinstance(s, tuple) for s in loaded)
    assert torch.equal(got, expected)


# ---------------------------------------------------------------------------------------------------------
# the cells
# ---------------------------------------------------------------------------------------------------------


def random_mlstm_inputs(B=2, NH=3, T=37, DH=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, NH, T, DH, generator=g, dtype=torch.float64) for _ in range(3))
    i = 3 * torch.randn(B, NH, T, generator=g, dtype=torch.float64)
    i[0, 0, 5] = 25.0  # a large input gate: exp(25) needs the stabiliser
    f = 2 + 3 * torch.randn(B, NH, T, generator=g, dtype=torch.float64)
    return q, k, v, i, f


def random_mlstm_state(B=2, NH=3, DH=5, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(B, NH, DH, DH, generator=g, dtype=torch.float64),
        torch.randn(B, NH, DH, generator=g, dtype=torch.float64),
        torch.randn(B, NH, generator=g, dtype=torch.float64),
    )


def assert_states_close(a, b, tol=1e-11):
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y, atol=tol, rtol=tol)


def test_mlstm_parallel_chunkwise_recurrent_agree():
    q, k, v, i, f = random_mlstm_inputs()
    h_par, s_par = mlstm_parallel(q, k, v, i, f)
    h_rec, s_rec = mlstm_recurrent(q, k, v, i, f)
    torch.testing.assert_close(h_par, h_rec, atol=1e-11, rtol=1e-11)
    assert_states_close(s_par, s_rec)
    for chunk in [1, 4, 5, 16, 37, 64]:  # 37 = T; 4, 5, 16 do not divide it
        h_chk, s_chk = mlstm_chunkwise(q, k, v, i, f, chunk_size=chunk)
        torch.testing.assert_close(h_chk, h_rec, atol=1e-11, rtol=1e-11)
        assert_states_close(s_chk, s_rec)


def test_mlstm_chunkwise_from_a_state_matches_recurrent():
    q, k, v, i, f = random_mlstm_inputs(seed=2)
    state = random_mlstm_state()
    h_rec, s_rec = mlstm_recurrent(q, k, v, i, f, state)
    for chunk in [3, 8, 37]:
        h_chk, s_chk = mlstm_chunkwise(q, k, v, i, f, state, chunk_size=chunk)
        torch.testing.assert_close(h_chk, h_rec, atol=1e-11, rtol=1e-11)
        assert_states_close(s_chk, s_rec)


def test_mlstm_stabilised_gating_matches_naive_formula():
    """The paper's unstabilised mLSTM: C_t = sigmoid(f) C + exp(i) k v^T, n_t = sigmoid(f) n + exp(i) k,
    h_t = C_t^T q / max(|n_t . q|, 1), with k scaled by 1/sqrt(DH). Small gates, so exp() cannot overflow."""
    q, k, v, i, f = random_mlstm_inputs(B=2, NH=2, T=11, DH=3, seed=3)
    i = i.clamp(-4, 4)
    B, NH, T, DH = q.shape
    C = torch.zeros(B, NH, DH, DH, dtype=torch.float64)
    n = torch.zeros(B, NH, DH, dtype=torch.float64)
    hs = []
    for t in range(T):
        ks = k[:, :, t] / math.sqrt(DH)
        fg, ig = torch.sigmoid(f[:, :, t])[..., None], torch.exp(i[:, :, t])[..., None]
        C = fg[..., None] * C + ig[..., None] * torch.einsum("bhk,bhv->bhkv", ks, v[:, :, t])
        n = fg * n + ig * ks
        num = torch.einsum("bhk,bhkv->bhv", q[:, :, t], C)
        den = torch.einsum("bhk,bhk->bh", q[:, :, t], n).abs().clamp(min=1.0)
        hs.append(num / den[..., None])
    naive = torch.stack(hs, dim=2)
    for h, _ in [mlstm_parallel(q, k, v, i, f, eps=0.0), mlstm_recurrent(q, k, v, i, f, eps=0.0),
                 mlstm_chunkwise(q, k, v, i, f, chunk_size=4, eps=0.0)]:
        torch.testing.assert_close(h, naive, atol=1e-12, rtol=1e-10)


def test_slstm_stabilised_gating_matches_naive_formula():
    """The paper's unstabilised sLSTM with headwise recurrence: raw = W x + R h_{t-1} + b,
    c = sigmoid(f) c + exp(i) tanh(z), n = sigmoid(f) n + exp(i), h = sigmoid(o) c / n."""
    g = torch.Generator().manual_seed(4)
    T, NH, B, DH = 9, 3, 2, 4
    wx = torch.randn(T, NH, B, 4 * DH, generator=g, dtype=torch.float64)
    R = 0.5 * torch.randn(NH, DH, 4, DH, generator=g, dtype=torch.float64)  # (head, in, gate, out)
    c = n = h = torch.zeros(NH, B, DH, dtype=torch.float64)
    hs = []
    for t in range(T):
        raw = wx[t].view(NH, B, 4, DH) + torch.einsum("hbd,hdgo->hbgo", h, R)
        i, f, z, o = raw.unbind(dim=2)
        c = torch.sigmoid(f) * c + torch.exp(i) * torch.tanh(z)
        n = torch.sigmoid(f) * n + torch.exp(i)
        h = torch.sigmoid(o) * c / n
        hs.append(h)
    got, (c1, n1, m1, h1) = slstm_scan(wx, R.view(NH, DH, 4 * DH))
    torch.testing.assert_close(got, torch.stack(hs), atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(c1 * torch.exp(m1), c, atol=1e-12, rtol=1e-10)  # stored divided by exp(m)
    torch.testing.assert_close(n1 * torch.exp(m1), n, atol=1e-12, rtol=1e-10)


# ---------------------------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------------------------


def test_overfits_a_tiny_batch():
    torch.manual_seed(0)
    V, T = 16, 16
    model = XLSTM(XLSTMConfig(vocab_size=V, embed=32, hidden=32, layers=2, heads=2, xlstm_ratio="1:1"))
    data = torch.randint(0, V, (4, T + 1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        logits, _ = model(data[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, V), data[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.25 * math.log(V), loss.item()


def test_gradients_reach_every_parameter():
    model = make_model("1:1", jitter=0.0, embed=16, hidden=32, tie_weights=False)
    model.train()
    idx = torch.randint(0, 11, (2, 10), generator=torch.Generator().manual_seed(8))
    logits, _ = model(idx)
    F.cross_entropy(logits.reshape(-1, 11), idx.roll(-1, 1).reshape(-1)).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_gradients_are_finite_through_carried_state():
    model = make_model("1:1", seed=9).train()
    model.set_mlstm_backend("chunkwise", chunk_size=4)  # 6 tokens: a padded last chunk
    idx = torch.randint(0, 11, (2, 12), generator=torch.Generator().manual_seed(9))
    _, state = model(idx[:, :6])
    logits, _ = model(idx[:, 6:], detach_state(state))
    logits.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("form", ["parallel", "chunkwise", "recurrent"])
def test_mlstm_gradients_stay_finite_when_an_input_gate_is_very_negative(form):
    """Regression: an input-gate pre-activation of -140 at a text's first token (seen when training on PTB)
    makes the stabiliser m = -140 there and exp(-m) overflows float32; the backward of the normaliser's
    max(|n.q|, exp(-m)) then turned 0 * inf into NaN in every weight. The outputs stay the recurrent ones."""
    q, k, v, i, f = (t.float().requires_grad_() for t in random_mlstm_inputs(seed=4))
    with torch.no_grad():
        i[:, :, 0] = -140.0
        i[:, 1, 5] = -300.0
    run = {"parallel": lambda: mlstm_parallel(q, k, v, i, f), "recurrent": lambda: mlstm_recurrent(q, k, v, i, f),
           "chunkwise": lambda: mlstm_chunkwise(q, k, v, i, f, chunk_size=8)}[form]
    h, _ = run()
    h.square().sum().backward()
    for name, t in zip("qkvif", (q, k, v, i, f), strict=True):
        assert torch.isfinite(t.grad).all(), name
    h_ref, _ = mlstm_recurrent(*(t.detach().double() for t in (q, k, v, i, f)))
    torch.testing.assert_close(h.double(), h_ref, atol=1e-4, rtol=1e-4)


# ---------------------------------------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------------------------------------


def test_block_placement():
    assert slstm_positions(4, "1:1") == [1, 3]
    assert slstm_positions(4, "3:1") == [3]
    assert slstm_positions(4, "1:3") == [1, 2, 3]
    assert slstm_positions(3, "1:0") == []
    assert slstm_positions(3, "0:1") == [0, 1, 2]
    assert make_model("1:1", layers=4).block_types == "msms"


@pytest.mark.parametrize("ratio", ["2", "a:b", "0:0", "1:-1", "1:1:1", ""])
def test_bad_ratio_is_a_one_line_config_error(ratio):
    with pytest.raises(ConfigError, match="xlstm_ratio") as err:
        XLSTMConfig(vocab_size=10, xlstm_ratio=ratio)
    assert "\n" not in str(err.value)


def test_hidden_not_divisible_by_heads_is_a_one_line_config_error():
    with pytest.raises(ConfigError, match="--hidden 100 must be divisible by --heads 3") as err:
        XLSTMConfig(vocab_size=10, hidden=100, heads=3)
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="mLSTM width 64"):  # 2 * 12 rounds up to 64, not divisible by 3
        XLSTMConfig(vocab_size=10, hidden=12, heads=3)
    XLSTMConfig(vocab_size=10, hidden=12, heads=3, xlstm_ratio="0:1")  # no mLSTM block: fine


def test_run_config_rejects_bad_xlstm_settings():
    from picollm.config import RunConfig

    with pytest.raises(ConfigError, match="divisible"):
        RunConfig(model="xlstm", hidden=100, heads=3)
    with pytest.raises(ConfigError, match="xlstm_ratio"):
        RunConfig(model="xlstm", xlstm_ratio="x")
