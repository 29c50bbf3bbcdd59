"""Our from-scratch xLSTM against the official NX-AI `xlstm` package (2.0.6), and the fast sLSTM recurrence
against its plain-autograd reference.

Library tests skip cleanly without the optional extra (pip install -e .[xlstm]). They copy the library's
weights into ours (after randomising the weights it initialises to zero: recurrent kernels, gate weights,
norm offsets) and compare in float64 with the same eps (1e-6 in the mLSTM normaliser, 1e-5 in the norms).

Also see tests/models/test_xlstm.py (not repeated here): the mLSTM parallel, chunkwise and recurrent forms agree
with each other (test_mlstm_parallel_chunkwise_recurrent_agree, ..._from_a_state_matches_recurrent), the
stabilised cells match the naive formulas, and step-by-step decoding equals the full forward
(test_step_by_step_equals_full_forward).
"""

from __future__ import annotations

import math
import sys
import warnings

import pytest
import torch
import torch.nn.functional as F

from picollm.core.errors import ConfigError
from picollm.models.xlstm.config import XLSTMConfig
from picollm.models.xlstm.model import (
    XLSTM,
    mlstm_chunkwise,
    mlstm_parallel,
    mlstm_recurrent,
    slstm_scan,
    slstm_scan_reference,
)

RATIOS = ["1:0", "1:1", "0:1"]
TOL = 1e-10


@pytest.fixture
def xl():
    return pytest.importorskip("xlstm", reason="optional extra: pip install -e .[xlstm]")


def library_and_ours(ratio: str, layers: int = 4, tie_weights: bool = True, seed: int = 0, V: int = 13):
    """The library's model (randomised weights) wrapped in XLSTMLib, and our XLSTM holding the same weights."""
    from picollm.models.xlstm_lib.config import XLSTMLibConfig
    from picollm.models.xlstm_lib.model import XLSTMLib, load_library_weights

    torch.manual_seed(seed)
    lib = XLSTMLib(XLSTMLibConfig(vocab_size=V, block_size=32, embed=64, layers=layers, heads=4,
                                  xlstm_ratio=ratio, tie_weights=tie_weights)).double()
    with torch.no_grad():
        for p in lib.parameters():
            p.add_(0.1 * torch.randn_like(p))  # the zero-initialised weights must take part
    ours = XLSTM(XLSTMConfig(vocab_size=V, embed=64, hidden=64, layers=layers, heads=4, xlstm_ratio=ratio,
                             tie_weights=tie_weights)).double()
    load_library_weights(ours, lib.lm)
    return lib.eval(), ours.eval()


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


# ---------------------------------------------------------------------------------------------------------
# against the library
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ratio", RATIOS)
def test_lm_logits_match_library(xl, ratio):
    lib, ours = library_and_ours(ratio)
    assert ours.block_types == {"1:0": "mmmm", "1:1": "msms", "0:1": "ssss"}[ratio]
    assert ours.num_params() == lib.num_params()
    idx = torch.randint(0, 13, (2, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = lib.lm(idx)
        for backend in ["chunkwise", "parallel", "recurrent"]:
            ours.set_mlstm_backend(backend, chunk_size=8)
            got, _ = ours(idx)
            assert max_diff(got, expected) < TOL, backend


@pytest.mark.parametrize("ratio", ["1:0", "0:1"])
def test_single_blocks_match_library(xl, ratio):
    lib, ours = library_and_ours(ratio, layers=1, seed=3)
    x = torch.randn(3, 17, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = lib.lm.xlstm_block_stack.blocks[0](x)
        got, _ = ours.blocks[0](x)
    assert max_diff(got, expected) < TOL


@pytest.mark.parametrize("ratio", RATIOS)
def test_gradients_match_library(xl, ratio):
    """Training is the same computation too: this checks our hand-written sLSTM backward end to end."""
    from picollm.models.xlstm_lib.model import _slstm_pairs, _weight_pairs

    lib, ours = library_and_ours(ratio, layers=2, tie_weights=False, seed=4)
    idx = torch.randint(0, 13, (2, 20), generator=torch.Generator().manual_seed(5))
    for model in (lib, ours):
        logits, _ = model(idx)
        F.cross_entropy(logits.reshape(-1, 13), idx.roll(-1, 1).reshape(-1)).backward()
    for ours_w, lib_w in _weight_pairs(ours, lib.lm):
        assert max_diff(ours_w.grad, lib_w.grad) < TOL
    for ob, cell in _slstm_pairs(ours, lib.lm):
        assert max_diff(ob.R.grad, cell._recurrent_kernel_int2ext(cell._recurrent_kernel_.grad).view_as(ob.R)) < TOL
        assert max_diff(ob.bias.grad, cell._bias_int2ext(cell._bias_.grad).view_as(ob.bias)) < TOL


def test_mlstm_cell_matches_library_backend_without_eps(xl):
    """Our three mLSTM forms against the library's parallel_stabilized_simple, both with eps = 0."""
    from xlstm.blocks.mlstm.backends import parallel_stabilized_simple

    g = torch.Generator().manual_seed(6)
    B, NH, T, DH = 2, 3, 29, 8
    q, k, v = (torch.randn(B, NH, T, DH, generator=g, dtype=torch.float64) for _ in range(3))
    i = 3 * torch.randn(B, NH, T, generator=g, dtype=torch.float64)
    f = 2 + 3 * torch.randn(B, NH, T, generator=g, dtype=torch.float64)
    expected = parallel_stabilized_simple(q, k, v, i[..., None], f[..., None], eps=0.0)
    for h, _ in [mlstm_parallel(q, k, v, i, f, eps=0.0), mlstm_recurrent(q, k, v, i, f, eps=0.0),
                 mlstm_chunkwise(q, k, v, i, f, chunk_size=8, eps=0.0)]:
        assert max_diff(h, expected) < TOL


# ---------------------------------------------------------------------------------------------------------
# the xlstm_lib family
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ratio", RATIOS)
def test_library_family_state_by_recomputation(xl, ratio):
    """Within the block_size window, stepping with the state equals the full forward exactly; beyond it the
    state is a sliding window, so later positions differ (documented)."""
    lib, _ = library_and_ours(ratio, layers=2)
    idx = torch.randint(0, 13, (2, 40), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        full, _ = lib(idx[:, :32])
        state, steps = None, []
        for t in range(32):
            logits, state = lib(idx[:, t:t + 1], state)
            steps.append(logits)
        assert max_diff(torch.cat(steps, 1), full) < TOL
        assert state["context"].shape == (2, 32)
        longer, _ = lib(torch.randint(0, 13, (1, 70)))  # > 2 * block_size = 64: the causal masks grow
        assert longer.shape == (1, 70, 13)


def test_library_family_through_the_registry(xl):
    from picollm.config import RunConfig
    from picollm.models import build_model, family_fields

    assert "hidden" not in family_fields("xlstm_lib")
    cfg = RunConfig(model="xlstm_lib", embed=64, layers=2, heads=4, xlstm_ratio="1:1")
    model = build_model(cfg, vocab_size=20)
    logits, _ = model(torch.randint(0, 20, (2, 9)))
    assert logits.shape == (2, 9, 20)
    with pytest.raises(ConfigError, match="divisible"):
        RunConfig(model="xlstm_lib", embed=66, heads=4)


def test_missing_library_is_a_one_line_config_error(monkeypatch):
    from picollm.models.xlstm_lib.config import XLSTMLibConfig
    from picollm.models.xlstm_lib.model import XLSTMLib

    monkeypatch.setitem(sys.modules, "xlstm", None)  # `import xlstm` raises ImportError
    with pytest.raises(ConfigError, match=r"pip install -e \.\[xlstm\]") as err:
        XLSTMLib(XLSTMLibConfig(vocab_size=10))
    assert "\n" not in str(err.value)


# ---------------------------------------------------------------------------------------------------------
# the fast sLSTM recurrence (no library needed)
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("with_state", [False, True])
def test_slstm_hand_written_backward_matches_autograd(with_state):
    g = torch.Generator().manual_seed(8)
    T, NH, B, DH = 11, 3, 2, 4
    wx = torch.randn(T, NH, B, 4 * DH, generator=g, dtype=torch.float64, requires_grad=True)
    R = (0.5 * torch.randn(NH, DH, 4 * DH, generator=g, dtype=torch.float64)).requires_grad_()
    state = None
    if with_state:
        c, m, h = (torch.randn(NH, B, DH, generator=g, dtype=torch.float64) for _ in range(3))
        n = 1 + torch.rand(NH, B, DH, generator=g, dtype=torch.float64)
        state = tuple(s.requires_grad_() for s in (c, n, m, h))
    inputs = [wx, R, *(state or ())]
    results = []
    for scan in (slstm_scan, slstm_scan_reference):
        hs, final = scan(wx, R, state)
        outs = (hs, *final)
        weights = [torch.randn(o.shape, generator=torch.Generator().manual_seed(k), dtype=o.dtype)
                   for k, o in enumerate(outs)]
        loss = sum((o * w).sum() for o, w in zip(outs, weights))  # gradients into every output, state included
        results.append((outs, torch.autograd.grad(loss, inputs)))
    (outs, grads), (ref_outs, ref_grads) = results
    for a, b in zip(outs, ref_outs):
        assert max_diff(a, b) < 1e-12
    for a, b in zip(grads, ref_grads):
        assert max_diff(a, b) < 1e-12


def test_slstm_ties_in_the_stabiliser_share_the_gradient_as_torch_maximum():
    # with R = 0 the pre-activations are wx: choose i = log f + m_prev at every step, a tie in m = max(i, u)
    g = torch.Generator().manual_seed(10)
    T, NH, B, DH = 6, 2, 3, 4
    wx = torch.randn(T, NH, B, 4 * DH, generator=g, dtype=torch.float64)
    m = torch.randn(NH, B, DH, generator=g, dtype=torch.float64)
    state = (torch.zeros_like(m), torch.ones_like(m), m, torch.zeros_like(m))
    for t in range(T):
        wx[t, ..., :DH] = torch.add(F.logsigmoid(wx[t, ..., DH:2 * DH]), m)  # as both scans compute u
        m = wx[t, ..., :DH]
    wx.requires_grad_()
    R = torch.zeros(NH, DH, 4 * DH, dtype=torch.float64, requires_grad=True)
    grads = []
    for scan in (slstm_scan, slstm_scan_reference):
        hs, (c, n, m, h) = scan(wx, R, state)
        grads.append(torch.autograd.grad((hs * torch.linspace(-1, 1, DH, dtype=hs.dtype)).sum() + m.sum(), (wx, R)))
    for a, b in zip(*grads):
        assert max_diff(a, b) < 1e-12


def test_slstm_scan_emits_no_warnings():
    wx = torch.randn(5, 2, 3, 16, requires_grad=True)
    R = torch.randn(2, 4, 16, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. TorchScript's deprecation, which the loops no longer use
        slstm_scan(wx, R)[0].sum().backward()


def test_slstm_gradcheck():
    g = torch.Generator().manual_seed(9)
    T, NH, B, DH = 5, 2, 2, 3
    wx = torch.randn(T, NH, B, 4 * DH, generator=g, dtype=torch.float64, requires_grad=True)
    R = (0.5 * torch.randn(NH, DH, 4 * DH, generator=g, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(lambda w, r: slstm_scan(w, r)[0], (wx, R))


def test_slstm_scan_is_finite_in_float32_with_large_gates():
    wx = torch.randn(40, 2, 3, 16) * 30  # exp(30) overflows float32 without the stabiliser
    R = torch.randn(2, 4, 16, requires_grad=True)
    wx.requires_grad_()
    hs, _ = slstm_scan(wx, R)
    hs.sum().backward()
    assert torch.isfinite(hs).all() and torch.isfinite(wx.grad).all() and torch.isfinite(R.grad).all()
    assert math.isfinite(R.grad.abs().sum().item())
