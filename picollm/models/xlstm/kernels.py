"""The xLSTM's two memory cells, written as plain tensor functions (the blocks in model.py beside it wrap them).

- mLSTM: matrix memory with exponential input and sigmoid forget gates, in three forms that compute the same
  thing: recurrent (one token at a time), parallel (quadratic in T, from the empty state) and chunkwise
  (parallel inside chunks, recurrent across them).
- sLSTM: scalar memory with exponential gating and headwise recurrent matrices, a true recurrence: slstm_scan
  runs its loop without autograd and backpropagates through time by hand (SLSTMScan, both loops
  TorchScript-compiled); slstm_scan_reference is the same recurrence in plain differentiable ops.

The stabilised gating follows the NX-AI `xlstm` library's formulas (including eps = 1e-6 in the mLSTM
normaliser); tests/models/test_xlstm.py and tests/models/test_xlstm_parity.py check the forms against each other, the naive
formulas and the library.
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor

EPS = 1e-6  # added to the mLSTM normaliser, as in the library


# ----------------------------------------------------------------------------------------------------------
# mLSTM cell: three forms of the same computation
#   q, k, v (B, NH, T, DH); i, f gate pre-activations (B, NH, T); state (C (B, NH, DH, DH), n (B, NH, DH),
#   m (B, NH)) with C = sum_j w_j k_j v_j^T, n = sum_j w_j k_j stored divided by exp(m).
# ----------------------------------------------------------------------------------------------------------


def _exp_neg(m: Tensor) -> Tensor:
    """exp(-m), the normaliser's lower bound, capped just below the dtype's overflow.

    A position whose stabiliser m is very negative (an input gate pre-activation of -140 at the start of a
    text, say) would give exp(-m) = inf. The forward would survive that (h = 0), but the backward of
    torch.maximum multiplies its zero gradient by that inf: NaN, which clipping spreads to every weight.
    The library has the same formula and the same failure; where m is above the cap nothing changes."""
    cap = math.log(torch.finfo(m.dtype).max) - 1.0  # 87.7 in float32
    return torch.exp((-m).clamp(max=cap))


def mlstm_empty_state(q: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    B, NH, _, DH = q.shape
    return (q.new_zeros(B, NH, DH, DH), q.new_zeros(B, NH, DH), q.new_full((B, NH), -math.inf))


def mlstm_step(q: Tensor, k: Tensor, v: Tensor, i: Tensor, f: Tensor, state, eps: float = EPS):
    """One token: q, k, v (B, NH, DH), i, f (B, NH) -> h (B, NH, DH), new state."""
    C, n, m = state
    k = k / math.sqrt(k.shape[-1])
    logf = F.logsigmoid(f)
    m_new = torch.maximum(logf + m, i)  # stabiliser: the largest log weight in the memory
    fg = torch.exp(logf + m - m_new)[..., None]  # (B, NH, 1)
    ig = torch.exp(i - m_new)[..., None]
    C = fg[..., None] * C + ig[..., None] * (k[..., :, None] * v[..., None, :])  # (B, NH, DH, DH)
    n = fg * n + ig * k
    num = (q[..., None, :] @ C).squeeze(-2)  # q^T C: (B, NH, DH)
    den = (q * n).sum(-1, keepdim=True)
    h = num / (torch.maximum(den.abs(), _exp_neg(m_new)[..., None]) + eps)
    return h, (C, n, m_new)


def mlstm_recurrent(q, k, v, i, f, state=None, eps: float = EPS):
    """Recurrent form: a loop of `mlstm_step` over T. Returns h (B, NH, T, DH) and the final state."""
    state = mlstm_empty_state(q) if state is None else state
    hs = []
    for t in range(q.shape[2]):
        h, state = mlstm_step(q[:, :, t], k[:, :, t], v[:, :, t], i[:, :, t], f[:, :, t], state, eps)
        hs.append(h)
    return torch.stack(hs, dim=2), state


def mlstm_parallel(q, k, v, i, f, eps: float = EPS):
    """Parallel form from the empty state (as the library's `parallel_stabilized_simple`): the (T, T) causal
    decay matrix D_tj = exp(sum_{j<s<=t} log f_s + i_j), stabilised row-wise. Memory quadratic in T."""
    T, DH = q.shape[2], q.shape[3]
    k = k / math.sqrt(DH)
    b = F.logsigmoid(f).cumsum(-1)  # (B, NH, T) log of the product of forget gates up to t
    causal = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
    logD = (b[..., :, None] - b[..., None, :] + i[..., None, :]).masked_fill(~causal, -math.inf)  # (B, NH, T, T)
    m = logD.max(-1).values  # (B, NH, T) row-wise stabiliser == the recurrent m_t
    D = torch.exp(logD - m[..., None])
    S = (q @ k.transpose(-1, -2)) * D  # (B, NH, T, T)
    den = torch.maximum(S.sum(-1, keepdim=True).abs(), _exp_neg(m)[..., None])
    h = (S / (den + eps)) @ v  # (B, NH, T, DH)
    w = D[:, :, -1]  # (B, NH, T) weights of every input in the final memory, relative to exp(m_T)
    state = ((k * w[..., None]).transpose(-1, -2) @ v, (k * w[..., None]).sum(-2), m[..., -1])
    return h, state


def mlstm_chunkwise(q, k, v, i, f, state=None, chunk_size: int = 64, eps: float = EPS):
    """Chunkwise form: the parallel form inside chunks of `chunk_size` tokens, the recurrent (C, n, m) state
    between chunks. Memory O(T * chunk_size). T need not be a multiple of chunk_size."""
    B, NH, T, DH = q.shape
    C, n, m = mlstm_empty_state(q) if state is None else state
    L = min(chunk_size, T)
    NS = -(-T // L)
    k = k / math.sqrt(DH)
    logf = F.logsigmoid(f)
    pad = NS * L - T
    if pad:  # padded steps keep the memory as it is: forget gate 1 (log 0), input gate 0 (log -inf)
        q, k, v = (F.pad(x, (0, 0, 0, pad)) for x in (q, k, v))
        i = F.pad(i, (0, pad), value=-math.inf)
        logf = F.pad(logf, (0, pad), value=0.0)
    q, k, v = (x.view(B, NH, NS, L, DH) for x in (q, k, v))  # (B, NH, NS, L, DH)
    i = i.view(B, NH, NS, L)
    b = logf.view(B, NH, NS, L).cumsum(-1)  # (B, NH, NS, L) log forget-gate product from the chunk start

    # each chunk's own contribution to the memory at its end, stabilised by its own max m_loc
    a = b[..., -1:] - b + i  # (B, NH, NS, L) log weight of input j at the chunk end
    m_loc = a.max(-1).values  # (B, NH, NS)
    kw = k * torch.exp(a - m_loc[..., None])[..., None]  # (B, NH, NS, L, DH)
    kv, ksum = kw.transpose(-1, -2) @ v, kw.sum(-2)  # (B, NH, NS, DH, DH), (B, NH, NS, DH)

    # recurrence across chunks: the state entering each chunk
    C_in, n_in, m_in = [], [], []
    for c in range(NS):
        C_in.append(C)
        n_in.append(n)
        m_in.append(m)
        b_end = b[:, :, c, -1]
        m_new = torch.maximum(b_end + m, m_loc[:, :, c])
        decay, scale = torch.exp(b_end + m - m_new), torch.exp(m_loc[:, :, c] - m_new)  # (B, NH)
        C = decay[..., None, None] * C + scale[..., None, None] * kv[:, :, c]
        n = decay[..., None] * n + scale[..., None] * ksum[:, :, c]
        m = m_new
    C_in, n_in, m_in = torch.stack(C_in, 2), torch.stack(n_in, 2), torch.stack(m_in, 2)  # (B, NH, NS, ...)

    # outputs: intra-chunk (parallel form) + the incoming memory decayed to each position
    causal = torch.ones(L, L, dtype=torch.bool, device=q.device).tril()
    logD = (b[..., :, None] - b[..., None, :] + i[..., None, :]).masked_fill(~causal, -math.inf)  # (B,NH,NS,L,L)
    g = b + m_in[..., None]  # (B, NH, NS, L) log weight of the incoming memory at each position
    m_row = torch.maximum(g, logD.max(-1).values)  # (B, NH, NS, L) == the recurrent m_t
    S = (q @ k.transpose(-1, -2)) * torch.exp(logD - m_row[..., None])  # (B, NH, NS, L, L)
    s = torch.exp(g - m_row)[..., None]  # (B, NH, NS, L, 1)
    num = S @ v + s * (q @ C_in)
    den = S.sum(-1, keepdim=True) + s * (q @ n_in[..., None])
    h = num / (torch.maximum(den.abs(), _exp_neg(m_row)[..., None]) + eps)
    return h.reshape(B, NH, NS * L, DH)[:, :, :T], (C, n, m)


# ----------------------------------------------------------------------------------------------------------
# sLSTM cell: the recurrence, vectorised over heads and batch
# ----------------------------------------------------------------------------------------------------------


def slstm_empty_state(wx: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The state before the first token, for pre-activations wx (T, NH, B, 4*DH): c = n = h = 0 and the
    stabiliser m = -inf, each (NH, B, DH)."""
    _, NH, B, G = wx.shape
    zeros = wx.new_zeros(NH, B, G // 4)
    return zeros, zeros, wx.new_full((NH, B, G // 4), -math.inf), zeros


def slstm_scan(wx: Tensor, R: Tensor, state=None):
    """wx (T, NH, B, 4*DH): input pre-activations + bias, gates in the order i, f, z, o per head;
    R (NH, DH, 4*DH): headwise recurrent kernel (h_{t-1} of a head feeds only that head's gates);
    state (c, n, m, h), each (NH, B, DH). Returns h for every step (T, NH, B, DH) and the final state.

    Runs the loop without autograd and backpropagates through time by hand (SLSTMScan): on CPU a step is
    a dozen small ops whose autograd bookkeeping would cost more than the arithmetic."""
    if state is None:
        state = slstm_empty_state(wx)
    c0, n0, m0, h0 = state
    hs, c, n, m = SLSTMScan.apply(wx, R, c0, n0, m0, h0)
    return hs, (c, n, m, hs[-1])


def slstm_scan_reference(wx: Tensor, R: Tensor, state=None):
    """slstm_scan written as a plain loop of differentiable ops: the reference its hand-written backward
    is tested against."""
    T, NH, B, G = wx.shape
    DH = G // 4
    if state is None:
        state = slstm_empty_state(wx)
    c, n, m, h = state
    hs = []
    for t in range(T):
        i, f, z, o = torch.baddbmm(wx[t], h, R).split(DH, dim=-1)  # each (NH, B, DH)
        logfm = m + F.logsigmoid(f)
        m = torch.maximum(i, logfm)  # stabiliser: exp(i - m), exp(log f + m_prev - m) are <= 1
        ig, fg = torch.exp(i - m), torch.exp(logfm - m)
        c = fg * c + ig * torch.tanh(z)
        n = fg * n + ig
        h = torch.sigmoid(o) * c / n
        hs.append(h)
    return torch.stack(hs), (c, n, m, h)


def _slstm_forward_loop(wx: Tensor, R: Tensor, A: Tensor, S: Tensor) -> Tensor:
    """The forward recurrence, writing the pre-activations of step t into A[t] (T, NH, B, 4DH) and its
    c, n, m, h into S[:, t + 1] (4, T + 1, NH, B, DH); S[:, 0] holds the initial state."""
    DH = wx.shape[3] // 4
    c, n, m, h = S[0, 0], S[1, 0], S[2, 0], S[3, 0]
    for t in range(wx.shape[0]):
        a = torch.baddbmm(wx[t], h, R, out=A[t])
        i, f, z, o = a.split(DH, dim=-1)
        u = F.logsigmoid(f).add_(m)  # log f + m_prev
        m = torch.maximum(i, u, out=S[2, t + 1])  # stabiliser: exp(i - m), exp(u - m) are <= 1
        ig, fg = (i - m).exp_(), (u - m).exp_()
        c = torch.addcmul(fg * c, ig, torch.tanh(z), out=S[0, t + 1])
        n = torch.addcmul(ig, fg, n, out=S[1, t + 1])
        h = torch.mul(torch.sigmoid(o), c, out=S[3, t + 1]).div_(n)
    return A


def _slstm_backward_loop(g_hs: Tensor, gc: Tensor, gn: Tensor, gm: Tensor, P: Tensor, Q: Tensor, c_prev: Tensor,
                         n_prev: Tensor, tz: Tensor, ig: Tensor, fg: Tensor, sel_i: Tensor, sel_u: Tensor,
                         sig_nf: Tensor, K_z: Tensor, K_o: Tensor, Rt: Tensor, dA: Tensor) -> list[Tensor]:
    """Backward through time: fills dA[t] (the gradient of step t's pre-activations) for t = T-1 .. 0 and
    returns the gradients of the initial state [c, n, m, h]. g* are the gradients of the loss w.r.t. the
    state after the last step; the other (T, NH, B, DH) inputs are the local derivatives of every step."""
    gh_rec = torch.zeros_like(gc)
    for t in range(g_hs.shape[0] - 1, -1, -1):
        gh = g_hs[t] + gh_rec
        gc = torch.addcmul(gc, gh, P[t])  # h = sigmoid(o) c / n
        gn = torch.addcmul(gn, gh, Q[t], value=-1.0)
        dfg = torch.addcmul(gc * c_prev[t], gn, n_prev[t])  # c = fg c_prev + ig tanh(z), n = fg n_prev + ig
        dig = torch.addcmul(gn, gc, tz[t])
        gA, gB = dig * ig[t], dfg * fg[t]  # through ig = exp(i - m), fg = exp(u - m)
        dm = gm - gA - gB
        di = torch.addcmul(gA, dm, sel_i[t])  # m = max(i, u)
        du = torch.addcmul(gB, dm, sel_u[t])
        torch.cat([di, du * sig_nf[t], gc * K_z[t], gh * K_o[t]], dim=-1, out=dA[t])
        gm, gc, gn = du, gc * fg[t], gn * fg[t]  # u = m_prev + log f
        gh_rec = torch.bmm(dA[t], Rt)
    return [gc, gn, gm, gh_rec]


_SCRIPTED: dict[str, object] = {}


def _scripted(fn):
    """torch.jit.script(fn), made once: it runs the small ops of the loops without Python's overhead
    (4-5x faster on CPU). TorchScript is deprecated in torch 2.x; if it ever fails, use fn as it is."""
    if fn.__name__ not in _SCRIPTED:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                _SCRIPTED[fn.__name__] = torch.jit.script(fn)
        except Exception:  # noqa: BLE001 - any scripting failure: fall back to eager
            _SCRIPTED[fn.__name__] = fn
    return _SCRIPTED[fn.__name__]


class SLSTMScan(torch.autograd.Function):
    """The sLSTM recurrence with a hand-written backward through time.

    forward(wx (T, NH, B, 4DH), R (NH, DH, 4DH), c0, n0, m0, h0 (NH, B, DH)) -> hs (T, NH, B, DH), c, n, m.
    The forward keeps the pre-activations and the states of every step; the backward recomputes the
    pointwise gate values of all steps at once and loops only over what is truly sequential."""

    @staticmethod
    def forward(ctx, wx, R, c0, n0, m0, h0):
        T, NH, B, G = wx.shape
        A = torch.empty_like(wx)  # pre-activations of every step
        S = wx.new_empty(4, T + 1, NH, B, G // 4)  # c, n, m, h of every step; index 0: the initial state
        for k, s0 in enumerate((c0, n0, m0, h0)):
            S[k, 0] = s0
        _scripted(_slstm_forward_loop)(wx.contiguous(), R.contiguous(), A, S)
        ctx.save_for_backward(A, R, S)
        return S[3, 1:], S[0, -1], S[1, -1], S[2, -1]

    @staticmethod
    def backward(ctx, g_hs, g_c, g_n, g_m):
        A, R, S = ctx.saved_tensors
        T, NH, B, G = A.shape
        DH = G // 4
        # pointwise quantities of every step at once, (T, NH, B, DH) each
        i, f, z, o = A.split(DH, dim=-1)
        c_prev, n_prev, m_prev = S[0, :-1], S[1, :-1], S[2, :-1]
        c, n, m, h = S[0, 1:], S[1, 1:], S[2, 1:], S[3, 1:]
        u = F.logsigmoid(f) + m_prev
        ig, fg = torch.exp(i - m), torch.exp(u - m)
        tz, so = torch.tanh(z), torch.sigmoid(o)
        sel_i = (i > u).to(A.dtype) + 0.5 * (i == u).to(A.dtype)  # how torch.maximum shares the gradient
        P, Q = so / n, h / n  # dh/dc, -dh/dn
        zero = A.new_zeros(NH, B, DH)
        grads = [zero if g is None else g.contiguous() for g in (g_c, g_n, g_m)]
        g_hs = A.new_zeros(T, NH, B, DH) if g_hs is None else g_hs.contiguous()
        dA = torch.empty_like(A)
        d_state = _scripted(_slstm_backward_loop)(
            g_hs, *grads, P, Q, c_prev, n_prev, tz, ig, fg, sel_i, 1.0 - sel_i, torch.sigmoid(-f),
            ig * (1.0 - tz * tz), P * c * (1.0 - so), R.transpose(1, 2).contiguous(), dA)
        h_prev = S[3, :-1].permute(1, 3, 0, 2).reshape(NH, DH, T * B)  # (NH, DH, T*B)
        dR = torch.bmm(h_prev, dA.transpose(0, 1).reshape(NH, T * B, G))  # (NH, DH, 4DH)
        return dA, dR, *d_state
