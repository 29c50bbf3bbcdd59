"""The xLSTM's two memory cells, written as plain tensor functions (the blocks in model.py beside it wrap them).

- mLSTM: matrix memory with exponential input and sigmoid forget gates, in three forms that compute the same
  thing: recurrent (one token at a time), parallel (quadratic in T, from the empty state) and chunkwise
  (parallel inside chunks, recurrent across them).
- sLSTM: scalar memory with exponential gating and headwise recurrent matrices, a true recurrence: slstm_scan
  runs its loop without autograd and backpropagates through time by hand (SLSTMScan); slstm_scan_reference
  is the same recurrence in plain differentiable ops. Both loops of SLSTMScan are plain eager PyTorch, each
  step a dozen ops writing in place. TorchScript (its loops until 96adb92) did not fuse them on CPU either,
  it only saved Python's call overhead; the eager forward keeps the gate values, so that the backward needs
  fewer ops per step and fewer passes, which makes up for it (bench/xlstm.py --scan --baseline 96adb92).
  torch.compile of one step costs more per call than the ops it replaces.

The stabilised gating follows the NX-AI `xlstm` library's formulas (including eps = 1e-6 in the mLSTM
normaliser); tests/models/test_xlstm.py and tests/models/test_xlstm_parity.py check the forms against each other, the naive
formulas and the library.
"""

from __future__ import annotations

import math

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


@torch.compiler.disable  # eager under torch.compile too: unrolled over T it compiles for minutes, gains nothing
def _slstm_forward_loop(wx: Tensor, R: Tensor, A: Tensor, S: Tensor, H: Tensor, Y: Tensor) -> None:
    """The forward recurrence. Step t writes its pre-activations into A[t] (T, NH, B, 4DH), its c, n, m into
    S[:, t + 1] (3, T + 1, NH, B, DH), its h into H[:, t + 1] (NH, T + 1, B, DH; head-major, so that the
    backward's dR needs no copy of it) and the values the backward reuses into Y[:, t] (5, T, NH, B, DH):
    u = log f + m_prev, the gates ig, fg, tanh(z), sigmoid(o). S[:, 0] and H[:, 0] hold the initial state.

    Plain eager ops, each writing into its place (out=, in place), so that the loop allocates nothing; every
    per-step view is made up front, one unbind per tensor, which is cheaper than indexing in the loop."""
    DH = A.shape[3] // 4
    i_, f_, z_, o_ = (A[..., k * DH:(k + 1) * DH].unbind(0) for k in range(4))
    c_, n_, m_ = (s.unbind(0) for s in S.unbind(0))
    u_, ig_, fg_, tz_, so_ = (y.unbind(0) for y in Y.unbind(0))
    a_, wx_, h_ = A.unbind(0), wx.unbind(0), H.unbind(1)
    for t in range(A.shape[0]):
        torch.baddbmm(wx_[t], h_[t], R, out=a_[t])  # (NH, B, 4DH): each head's h feeds only its own gates
        u = torch.add(F.logsigmoid(f_[t]), m_[t], out=u_[t])  # log f + m_prev
        m = torch.maximum(i_[t], u, out=m_[t + 1])  # stabiliser: exp(i - m), exp(u - m) are <= 1
        ig, fg = torch.sub(i_[t], m, out=ig_[t]).exp_(), torch.sub(u, m, out=fg_[t]).exp_()
        c = torch.mul(fg, c_[t], out=c_[t + 1]).addcmul_(ig, torch.tanh(z_[t], out=tz_[t]))
        n = torch.addcmul(ig, fg, n_[t], out=n_[t + 1])
        torch.mul(torch.sigmoid(o_[t], out=so_[t]), c, out=h_[t + 1]).div_(n)


@torch.compiler.disable
def _slstm_backward_loop(gh_: Tensor, GCN: Tensor, gm: Tensor, PQ: Tensor, X0: Tensor, X1: Tensor, sel_i: Tensor,
                         sig_nf: Tensor, K_z: Tensor, K_o: Tensor, fg: Tensor, Rt: Tensor, dA: Tensor) -> list[Tensor]:
    """Backward through time: fills dA[:, t] (NH, T, B, 4DH), the gradient of step t's pre-activations, for
    t = T-1 .. 0 and returns the gradients of the initial state [c, n, m, h].

    gh_ (T, NH, B, DH) holds the gradients of the outputs h and is overwritten by the total gradient of each
    h; GCN (T + 1, 2, NH, B, DH) holds in GCN[T - 1] the gradients [c, n] of the final state and receives
    those of every step (GCN[-1]: the initial state); gm is the final m's gradient. The rest are the local
    derivatives of every step, (T, NH, B, DH) or paired (T, 2, NH, B, DH): with gc, gn the total gradients
    of step t's c and n, [gc, gn] += gh [P, -Q] (h = sigmoid(o) c / n), and gA = gc X0[0] + gn X1[0],
    gB = gc X0[1] + gn X1[1] are the gradients through ig = exp(i - m) and fg = exp(u - m)."""
    T, _, _, DH = gh_.shape
    d_i, d_f, d_z, d_o = (dA[..., k * DH:(k + 1) * DH].unbind(1) for k in range(4))
    dA_, gh_ = dA.unbind(1), gh_.unbind(0)
    PQ, X0, X1, sel_i, sig_nf, K_z, K_o, fg = (x.unbind(0) for x in (PQ, X0, X1, sel_i, sig_nf, K_z, K_o, fg))
    gcn_, gc_, gn_ = GCN.unbind(0), GCN[:, 0].unbind(0), GCN[:, 1].unbind(0)
    GAB = torch.empty_like(GCN[1:])
    gab_, gA_, gB_ = GAB.unbind(0), GAB[:, 0].unbind(0), GAB[:, 1].unbind(0)
    gh = gh_[T - 1]
    gcn_[T - 1].addcmul_(gh, PQ[T - 1])
    for t in range(T - 1, -1, -1):
        torch.mul(gc_[t], X0[t], out=gab_[t]).addcmul_(gn_[t], X1[t])  # [gA, gB]
        # m = max(i, u) passes dm = gm - gA - gB on to i (di = gA + sel dm) or to u (du = gm - di)
        di = torch.lerp(gA_[t], gm - gB_[t], sel_i[t], out=d_i[t])
        gm = torch.sub(gm, di)  # u = log f + m_prev: du is m_prev's gradient
        torch.mul(gm, sig_nf[t], out=d_f[t])
        torch.mul(gc_[t], K_z[t], out=d_z[t])
        torch.mul(gh, K_o[t], out=d_o[t])
        if t == 0:
            break
        gh = gh_[t - 1].baddbmm_(dA_[t], Rt)  # h_{t-1} feeds step t's gates through R
        torch.addcmul(gcn_[t] * fg[t], gh, PQ[t - 1], out=gcn_[t - 1])  # c = fg c_prev + ..., n = fg n_prev + ...
    gcn = torch.mul(gcn_[0], fg[0], out=gcn_[-1])
    return [gcn[0], gcn[1], gm, torch.bmm(dA_[0], Rt)]


class SLSTMScan(torch.autograd.Function):
    """The sLSTM recurrence with a hand-written backward through time.

    forward(wx (T, NH, B, 4DH), R (NH, DH, 4DH), c0, n0, m0, h0 (NH, B, DH)) -> hs (T, NH, B, DH), c, n, m.
    The forward keeps the pre-activations, the states and the gate values of every step; the backward
    derives the local derivatives of all steps at once and loops only over what is truly sequential."""

    @staticmethod
    def forward(ctx, wx, R, c0, n0, m0, h0):
        T, NH, B, G = wx.shape
        A = torch.empty_like(wx)  # pre-activations of every step
        S = wx.new_empty(3, T + 1, NH, B, G // 4)  # c, n, m of every step; index 0: the initial state
        H = wx.new_empty(NH, T + 1, B, G // 4)  # h of every step, head-major
        for s, s0 in ((S[0, 0], c0), (S[1, 0], n0), (S[2, 0], m0), (H[:, 0], h0)):
            s.copy_(s0)
        Y = wx.new_empty(5, T, NH, B, G // 4)  # u, ig, fg, tanh(z), sigmoid(o) of every step
        _slstm_forward_loop(wx.contiguous(), R.contiguous(), A, S, H, Y)
        ctx.save_for_backward(A, R, S, H, Y)
        return H[:, 1:].transpose(0, 1), S[0, -1], S[1, -1], S[2, -1]

    @staticmethod
    def backward(ctx, g_hs, g_c, g_n, g_m):
        A, R, S, H, Y = ctx.saved_tensors
        T, NH, B, G = A.shape
        DH = G // 4
        i, f = A[..., :DH], A[..., DH:2 * DH]
        u, ig, fg, tz, so = Y
        c_prev, n_prev, n, h = S[0, :-1], S[1, :-1], S[1, 1:], H[:, 1:].transpose(0, 1)
        # as few passes over the (T, NH, B, DH) tensors as possible: each costs as much as a step of the loop
        sel_i = torch.sub(i, u).sign_().add_(1.0).mul_(0.5)  # how torch.maximum shares the gradient: 1, 0.5, 0
        PQ, X0, X1 = A.new_empty(3, T, 2, NH, B, DH)
        torch.div(so, n, out=PQ[:, 0])  # dh/dc
        torch.div(h, n, out=PQ[:, 1]).neg_()  # dh/dn
        torch.mul(tz, ig, out=X0[:, 0])  # gA = (gc tz + gn) ig
        torch.mul(c_prev, fg, out=X0[:, 1])  # gB = (gc c_prev + gn n_prev) fg
        X1[:, 0] = ig
        torch.mul(n_prev, fg, out=X1[:, 1])
        K_z = torch.addcmul(ig, X0[:, 0], tz, value=-1.0)  # dc/dz = ig (1 - tanh(z)^2)
        K_o = torch.addcmul(h, h, so, value=-1.0)  # dh/do = c / n sigmoid'(o) = h (1 - sigmoid(o))
        GCN = A.new_empty(T + 1, 2, NH, B, DH)
        for k, g in enumerate((g_c, g_n)):
            GCN[T - 1, k] = 0.0 if g is None else g
        gm = A.new_zeros(NH, B, DH) if g_m is None else g_m.contiguous()
        gh = A.new_zeros(T, NH, B, DH) if g_hs is None else g_hs.clone(memory_format=torch.contiguous_format)
        dA = A.new_empty(NH, T, B, G)  # head-major, as H: dR below is one matmul without copies
        d_state = _slstm_backward_loop(gh, GCN, gm, PQ, X0, X1, sel_i, f.neg().sigmoid_(), K_z, K_o, fg,
                                       R.transpose(1, 2).contiguous(), dA)
        dR = torch.bmm(H[:, :-1].reshape(NH, T * B, DH).transpose(1, 2), dA.view(NH, T * B, G))  # (NH, DH, 4DH)
        return dA.transpose(0, 1), dR, *d_state
