"""xLSTM language model, written from scratch after Beck et al. 2024, "xLSTM: Extended Long Short-Term Memory".

A stack of residual pre-LayerNorm blocks of two kinds:

- mLSTM block (pre-up-projection): matrix memory C (DH x DH per head), exponential input gate, sigmoid
  forget gate, covariance update C_t = f C_{t-1} + i k v^T. Fully parallelisable: trained with a chunkwise
  form (quadratic within a chunk, recurrent across chunks), stepped with the recurrent form.
- sLSTM block (post-up-projection): scalar memory with exponential gating and block-diagonal (headwise)
  recurrent matrices; a true recurrence, run as a loop over time, followed by a gated feed-forward.

Parameters, their shapes and their initialisation mirror the official NX-AI `xlstm` library (xLSTMLMModel
with mLSTMBlock / sLSTMBlock), so its weights can be copied in one-to-one (names differ, see the notes on
each module). The stabilised exponential gating follows the library's formulas (including eps = 1e-6 in
the mLSTM normaliser), so that the parallel, chunkwise and recurrent forms agree with each other and with it.

The empty state ("start of text") has C = n = 0 and stabiliser m = -inf: the stabiliser is then always the
running max of the log-gate weights, which is what the library's parallel forward (and its sLSTM cell,
through its `n == 0` check) computes. Saved states are finite after the first token.

The cells themselves (the mLSTM's three forms, the sLSTM scan) are in kernels.py beside it, the settings in config.py; this
module holds the blocks and the model. Speed on CPU (bench/xlstm.py): the sLSTM loop runs without
autograd and has a hand-written backward through time (SLSTMScan, two eager loops of in-place ops), 2.5-4.5x
faster than the library's vanilla backend; the depthwise conv is written as K shifted multiply-adds; the mLSTM
block runs at the library's speed.
tests/models/test_xlstm_parity.py checks all of it against the library and a plain-autograd reference.

Differences from the library (xlstm 2.0.6), for whoever copies weights across:
- its mLSTM step() starts from m = 0, so its own stepping differs slightly from its forward; ours matches
  its forward. Our mLSTM state is n (B, NH, DH), m (B, NH) where it has (B, NH, DH, 1), (B, NH, 1, 1).
- sLSTM: our R (NH, DH, 4, DH) and bias (NH, 4, DH) are its `recurrent_kernel` / `bias` proxies (external
  layout); its state_dict holds backend-internal layouts (`_recurrent_kernel_`, `_bias_`). Gate names swap,
  see SLSTMBlock. Its CPU path needs sLSTMLayerConfig(backend="vanilla").
- feed-forward factor 4/3 (paper) where its FeedForwardConfig defaults to 1.3: the same width after
  rounding up to a multiple of 64 for most sizes (hidden 128 -> 192 both). Our FFN also applies dropout
  (its stack leaves the FFN's dropout at 0). No embedding dropout, as its default.
- embed != hidden adds in / out projections, which it does not have (it has embed == hidden).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from picollm.models.base import LanguageModel, State
from picollm.models.xlstm.config import XLSTMConfig, parse_ratio, slstm_positions  # noqa: F401 - re-exported
from picollm.models.xlstm.kernels import (
    mlstm_chunkwise,
    mlstm_parallel,
    mlstm_recurrent,
    slstm_scan,
    slstm_scan_reference,  # noqa: F401 - the stand-in for slstm_scan that analyze.influence swaps in here
)

# ----------------------------------------------------------------------------------------------------------
# modules
# ----------------------------------------------------------------------------------------------------------


class LayerNorm(nn.Module):
    """Bias-free LayerNorm whose gain is stored as an offset from 1 (zero-initialised), as in the library."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(dim))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, (x.shape[-1],), 1.0 + self.weight, None, self.eps)


class MultiHeadNorm(LayerNorm):
    """GroupNorm with one group per head (each head's DH outputs normalised on their own)."""

    def forward(self, h: Tensor) -> Tensor:
        """h (B, NH, T, DH) -> (B, T, NH * DH)."""
        B, NH, T, DH = h.shape
        x = h.transpose(1, 2).reshape(B * T, NH * DH)  # (B*T, NH*DH)
        return F.group_norm(x, NH, 1.0 + self.weight, None, self.eps).view(B, T, NH * DH)


class HeadwiseLinear(nn.Module):
    """Block-diagonal linear map without bias: the input is split into `blocks` groups, each mapped by its
    own square matrix. weight (blocks, out, in) as the library's LinearHeadwiseExpand."""

    def __init__(self, dim: int, blocks: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(blocks, dim // blocks, dim // blocks))

    def forward(self, x: Tensor) -> Tensor:
        nb, o, d = self.weight.shape
        y = torch.einsum("...hd,hod->...ho", x.view(*x.shape[:-1], nb, d), self.weight)  # (..., nb, o)
        return y.reshape(*x.shape[:-1], nb * o)


def causal_conv(x: Tensor, conv: nn.Conv1d, buf: Tensor | None) -> tuple[Tensor, Tensor]:
    """Depthwise causal conv. x (B, T, D), buf (B, K-1, D) the previous inputs (zeros at the start).
    Returns y (B, T, D) and the new buffer (the last K-1 inputs).

    Written as K shifted multiply-adds: y_t = bias + sum_k w_k * xp_{t+k} (what F.conv1d computes), several
    times faster than a depthwise convolution's forward and backward on CPU for small K."""
    K, T = conv.kernel_size[0], x.shape[1]
    if buf is None:
        buf = x.new_zeros(x.shape[0], K - 1, x.shape[2])
    xp = torch.cat([buf, x], dim=1)  # (B, K-1+T, D)
    w = conv.weight[:, 0]  # (D, K)
    y = torch.addcmul(conv.bias, xp[:, :T], w[:, 0])
    for k in range(1, K):
        y = torch.addcmul(y, xp[:, k:k + T], w[:, k])
    return y, xp[:, xp.shape[1] - (K - 1):]


def _small_init(w: Tensor, dim: int) -> None:
    nn.init.normal_(w, std=math.sqrt(2 / (5 * dim)))


def _wang_init(w: Tensor, dim: int, num_blocks: int) -> None:
    nn.init.normal_(w, std=2 / num_blocks / math.sqrt(dim))


class _FullPrecision:
    """Run the cells in >= float32 under autocast: the exponential gates overflow in half precision."""

    def __init__(self, x: Tensor):
        self.on = torch.is_autocast_enabled(x.device.type)
        self.ctx = torch.autocast(x.device.type, enabled=False) if self.on else None

    def __enter__(self):
        if self.ctx:
            self.ctx.__enter__()
        return self

    def __exit__(self, *exc):
        if self.ctx:
            self.ctx.__exit__(*exc)

    def cast(self, *ts: Tensor) -> list[Tensor]:
        return [t.float() if self.on and t.dtype in (torch.float16, torch.bfloat16) else t for t in ts]


class MLSTMBlock(nn.Module):
    """x + mLSTMLayer(LayerNorm(x)). Library names: norm = xlstm_norm, the rest = xlstm.<same name>
    (conv = conv1d.conv, outnorm = mlstm_cell.outnorm, igate / fgate = mlstm_cell.igate / fgate).

    state: (C (B, NH, DH, DH), n (B, NH, DH), m (B, NH), conv buffer (B, K-1, inner))."""

    #: "chunkwise" (training default), "parallel" (quadratic; one chunk when a state is carried in) or
    #: "recurrent" (loop over time). A single token always takes the recurrent step.
    backend: str = "chunkwise"

    def __init__(self, cfg: XLSTMConfig):
        super().__init__()
        H, D, NH = cfg.hidden, cfg.inner, cfg.heads  # D: the up-projected width
        self.heads, self.chunk_size = NH, cfg.chunk_size
        self.norm = LayerNorm(H)
        self.proj_up = nn.Linear(H, 2 * D, bias=False)  # -> x branch, z (output gate) branch
        self.conv = nn.Conv1d(D, D, cfg.conv_kernel, groups=D, bias=True)  # PyTorch default init, as library
        self.q_proj = HeadwiseLinear(D, D // cfg.qkv_blocksize)
        self.k_proj = HeadwiseLinear(D, D // cfg.qkv_blocksize)
        self.v_proj = HeadwiseLinear(D, D // cfg.qkv_blocksize)
        self.igate = nn.Linear(3 * D, NH)  # gate pre-activations from [q, k, v], one per head
        self.fgate = nn.Linear(3 * D, NH)
        self.outnorm = MultiHeadNorm(D)
        self.learnable_skip = nn.Parameter(torch.ones(D))
        self.proj_down = nn.Linear(D, H, bias=False)
        self.dropout = nn.Dropout(cfg.dropout)
        _small_init(self.proj_up.weight, H)
        for proj in (self.q_proj, self.k_proj, self.v_proj):
            _small_init(proj.weight, H)  # the library uses the block width here, not the inner width
        nn.init.zeros_(self.igate.weight)
        nn.init.normal_(self.igate.bias, std=0.1)
        nn.init.zeros_(self.fgate.weight)
        with torch.no_grad():  # forget gates start open: sigmoid(3..6) = 0.95..0.998
            self.fgate.bias.copy_(torch.linspace(3.0, 6.0, NH))
        _wang_init(self.proj_down.weight, H, cfg.layers)

    def cell(self, q, k, v, i, f, state):
        T = q.shape[2]
        if T == 1 or self.backend == "recurrent":
            return mlstm_recurrent(q, k, v, i, f, state)
        if self.backend == "parallel":
            return mlstm_parallel(q, k, v, i, f) if state is None else mlstm_chunkwise(q, k, v, i, f, state, T)
        if self.backend == "chunkwise":
            if state is None and T <= self.chunk_size:  # one chunk from the empty state: the parallel form,
                return mlstm_parallel(q, k, v, i, f)  # the same computation without the chunk bookkeeping
            return mlstm_chunkwise(q, k, v, i, f, state, self.chunk_size)
        raise ValueError(f"unknown mLSTM backend {self.backend!r}")

    def forward(self, x: Tensor, state: State = None) -> tuple[Tensor, State]:
        """x (B, T, H) -> (B, T, H), state."""
        B, T, _ = x.shape
        NH = self.heads
        cell_state, buf = (None, None) if state is None else (tuple(state[:3]), state[3])
        xm, z = self.proj_up(self.norm(x)).chunk(2, dim=-1)  # (B, T, D) each
        xc, buf = causal_conv(xm, self.conv, buf)
        xc = F.silu(xc)
        q, k, v = self.q_proj(xc), self.k_proj(xc), self.v_proj(xm)  # v skips the conv
        qkv = torch.cat([q, k, v], dim=-1)  # (B, T, 3D)
        i, f = self.igate(qkv).transpose(1, 2), self.fgate(qkv).transpose(1, 2)  # (B, NH, T)
        q, k, v = (t.view(B, T, NH, -1).transpose(1, 2) for t in (q, k, v))  # (B, NH, T, DH)
        with _FullPrecision(x) as fp:
            h, cell_state = self.cell(*fp.cast(q, k, v, i, f), cell_state)  # (B, NH, T, DH)
        h = self.outnorm(h)  # (B, T, D)
        h = (h + self.learnable_skip * xc) * F.silu(z)
        return x + self.dropout(self.proj_down(h)), (*cell_state, buf)


class SLSTMBlock(nn.Module):
    """x + sLSTMLayer(LayerNorm(x)), then x + GatedFFN(LayerNorm(x)). Library names: norm = xlstm_norm,
    conv = xlstm.conv1d.conv, {i,f,z,o}gate = xlstm.{i,f,z,o}gate, group_norm = xlstm.group_norm,
    R / bias = xlstm.slstm_cell.recurrent_kernel / bias (external layouts (NH, DH, 4, DH) / (NH, 4, DH)),
    ffn_norm, ffn_up / ffn_down = ffn.proj_up / proj_down.
    Note: the library's sLSTMLayer (xlstm 2.0.6, forward and step) feeds its `fgate` module into the
    input-gate slot and its `igate` module into the forget-gate slot: copy its fgate.weight into our
    igate.weight and its igate.weight into our fgate.weight.

    state: (c, n, m, h) each (B, NH, DH), conv buffer (B, K-1, H)."""

    def __init__(self, cfg: XLSTMConfig, block_idx: int):
        super().__init__()
        H, NH = cfg.hidden, cfg.heads
        DH = H // NH
        self.heads = NH
        self.norm = LayerNorm(H)
        self.conv = nn.Conv1d(H, H, cfg.conv_kernel, groups=H, bias=True)
        self.igate, self.fgate = HeadwiseLinear(H, NH), HeadwiseLinear(H, NH)  # from the conv output
        self.zgate, self.ogate = HeadwiseLinear(H, NH), HeadwiseLinear(H, NH)  # from the raw input
        self.R = nn.Parameter(torch.zeros(NH, DH, 4, DH))  # (head, input dim, gate, output dim)
        self.bias = nn.Parameter(torch.zeros(NH, 4, DH))  # (head, gate, dim)
        self.group_norm = MultiHeadNorm(H)
        self.dropout = nn.Dropout(cfg.dropout)
        self.ffn_norm = LayerNorm(H)
        self.ffn_up = nn.Linear(H, 2 * cfg.ffn_dim, bias=False)  # -> GeLU gate, value
        self.ffn_down = nn.Linear(cfg.ffn_dim, H, bias=False)
        for gate in (self.igate, self.fgate, self.zgate, self.ogate):
            _small_init(gate.weight, H)
        # forget-gate bias "powerlaw_blockdependent": from +5 (remember) to -7 (forget) across each head's
        # units, with a curve that depends on the block's depth
        depth = block_idx / (cfg.layers - 1) if cfg.layers > 1 else 0.0
        ramp = torch.arange(DH) / max(DH - 1, 1)
        with torch.no_grad():
            self.bias[:, 1] = -(-5.0 + 12.0 * ramp ** (0.3 + 1.3 * depth))
        _small_init(self.ffn_up.weight, H)
        _wang_init(self.ffn_down.weight, H, cfg.layers)

    def forward(self, x: Tensor, state: State = None) -> tuple[Tensor, State]:
        """x (B, T, H) -> (B, T, H), state."""
        B, T, H = x.shape
        NH = self.heads
        DH = H // NH
        cell_state, buf = (None, None) if state is None else (tuple(s.transpose(0, 1) for s in state[:4]), state[4])
        xn = self.norm(x)
        xc, buf = causal_conv(xn, self.conv, buf)
        xc = F.silu(xc)
        # all input projections at once, outside the time loop
        pre = torch.stack([self.igate(xc), self.fgate(xc), self.zgate(xn), self.ogate(xn)], dim=2)  # (B, T, 4, H)
        pre = pre.view(B, T, 4, NH, DH).permute(1, 3, 0, 2, 4) + self.bias[None, :, None]  # (T, NH, B, 4, DH)
        R = self.R.view(NH, DH, 4 * DH)
        with _FullPrecision(x) as fp:
            wx, R = fp.cast(pre.reshape(T, NH, B, 4 * DH), R)
            hs, cell_state = slstm_scan(wx, R, cell_state)  # (T, NH, B, DH)
        hs = self.dropout(hs.to(x.dtype).permute(2, 1, 0, 3))  # (B, NH, T, DH)
        x = x + self.group_norm(hs)  # the sLSTM block has no output projection
        gate, val = self.ffn_up(self.ffn_norm(x)).chunk(2, dim=-1)
        x = x + self.dropout(self.ffn_down(F.gelu(gate) * val))
        return x, (*(s.transpose(0, 1) for s in cell_state), buf)


class XLSTM(LanguageModel):
    """Embedding -> [in-projection] -> blocks -> LayerNorm -> [out-projection] -> head.

    forward(idx (B, T), state) -> logits (B, T, V), state: a list with one tuple of tensors per block.
    Library names: wte = token_embedding, blocks.j = xlstm_block_stack.blocks.j, ln_f =
    xlstm_block_stack.post_blocks_norm, lm_head = lm_head (proj_in / proj_out exist only when embed != hidden
    and have no library counterpart)."""

    carries_state = True

    def __init__(self, config: XLSTMConfig):
        super().__init__()
        self.config = cfg = config
        slstm_at = set(cfg.slstm_at)
        self.wte = nn.Embedding(cfg.vocab_size, cfg.embed)
        self.proj_in = nn.Linear(cfg.embed, cfg.hidden, bias=False) if cfg.embed != cfg.hidden else None
        self.blocks = nn.ModuleList(
            SLSTMBlock(cfg, j) if j in slstm_at else MLSTMBlock(cfg) for j in range(cfg.layers)
        )
        self.ln_f = LayerNorm(cfg.hidden)
        # Identity at 0, so a run without it draws the same random numbers as before the setting existed
        self.io_drop = nn.Dropout(cfg.io_dropout) if cfg.io_dropout > 0 else nn.Identity()
        self.proj_out = nn.Linear(cfg.hidden, cfg.embed, bias=False) if cfg.embed != cfg.hidden else None
        self.lm_head = nn.Linear(cfg.embed, cfg.vocab_size, bias=False)
        _small_init(self.wte.weight, cfg.embed)
        if cfg.tie_weights:
            self.lm_head.weight = self.wte.weight
        else:
            _small_init(self.lm_head.weight, cfg.embed)
        for proj in (self.proj_in, self.proj_out):
            if proj is not None:
                _small_init(proj.weight, proj.in_features)

    @property
    def block_types(self) -> str:
        """e.g. 'msms': the kind of each block, bottom to top."""
        return "".join("s" if isinstance(b, SLSTMBlock) else "m" for b in self.blocks)

    def set_mlstm_backend(self, backend: str, chunk_size: int | None = None) -> None:
        """Choose the mLSTM form ("chunkwise", "parallel", "recurrent"); all give the same results."""
        for block in self.blocks:
            if isinstance(block, MLSTMBlock):
                block.backend = backend
                block.chunk_size = chunk_size or block.chunk_size

    def forward(self, idx: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """idx (B, T) int64 -> logits (B, T, V), state after the last position."""
        x = self.io_drop(self.wte(idx))  # (B, T, E)
        if self.proj_in is not None:
            x = self.proj_in(x)  # (B, T, H)
        new_state = []
        for j, block in enumerate(self.blocks):
            x, s = block(x, None if state is None else state[j])
            new_state.append(s)
        x = self.io_drop(self.ln_f(x))
        if self.proj_out is not None:
            x = self.proj_out(x)
        return self.lm_head(x), new_state

    def embedding_matrix(self) -> Tensor:
        return self.wte.weight
