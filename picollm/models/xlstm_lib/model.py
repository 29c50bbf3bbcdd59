"""xLSTM from the official NX-AI `xlstm` package (2.0.6), behind picollm's model interface: a reference
family (`--model xlstm_lib`) for comparison runs against our from-scratch `xlstm`.

Optional extra: `pip install -e .[xlstm]`. The library is imported only when the model is built, so the
rest of picollm works without it. On CPU its sLSTM needs backend="vanilla" (the default "cuda" backend
compiles a CUDA kernel), which we use everywhere.

State by recomputation. The library's forward() has no state input for mLSTM blocks and returns no
state, and its step() handles one token at a time (and starts the mLSTM stabiliser at m = 0, so it
differs slightly from its own forward). So our state is the window of the last `block_size` tokens, and
forward(idx, state) runs the library's parallel forward over [window, idx] and keeps the logits of idx:
each new token sees between block_size and 2 * block_size - 1 tokens of history, from an empty memory.
This is exact for generation within that window and an approximation beyond it (like a transformer's
sliding window), so `carries_state` is False: evaluation starts every window afresh, as for the transformer.
The cost of a carried state is one forward over up to 2 * block_size tokens.

Width: the library has one width (embedding_dim) for embedding and blocks, so this family has no `hidden`
setting: `--embed` is the block width. Constants match our xlstm (conv 4, qkv blocks of 4, mLSTM up-projection
2, sLSTM feed-forward 4/3 with GeLU), so `copy_weights(ours, lib)` maps one onto the other exactly when
ours has embed == hidden.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from picollm.core.errors import ConfigError
from picollm.models.base import LanguageModel, State
from picollm.models.xlstm.model import XLSTM, SLSTMBlock
from picollm.models.xlstm_lib.config import XLSTMLibConfig

INSTALL_HINT = "the xlstm_lib family needs the optional `xlstm` package: pip install -e .[xlstm]"


def import_xlstm():
    """The `xlstm` module, or a one-line ConfigError naming the install command."""
    try:
        import xlstm
    except ImportError:
        raise ConfigError(INSTALL_HINT) from None
    if not hasattr(xlstm, "xLSTMLMModel"):  # e.g. a script named xlstm.py shadowing the package
        raise ConfigError(f"`import xlstm` found {xlstm.__file__}, not the library; {INSTALL_HINT}")
    return xlstm


def library_config(cfg: XLSTMLibConfig, context_length: int):
    """The library's xLSTMLMModelConfig for our settings."""
    xl = import_xlstm()
    mlstm = xl.mLSTMBlockConfig(mlstm=xl.mLSTMLayerConfig(
        conv1d_kernel_size=cfg.conv_kernel, qkv_proj_blocksize=cfg.qkv_blocksize, num_heads=cfg.heads,
        proj_factor=cfg.mlstm_proj_factor))
    slstm = xl.sLSTMBlockConfig(
        slstm=xl.sLSTMLayerConfig(backend="vanilla", num_heads=cfg.heads, conv1d_kernel_size=cfg.conv_kernel),
        feedforward=xl.FeedForwardConfig(proj_factor=cfg.ffn_proj_factor, act_fn="gelu"))
    return xl.xLSTMLMModelConfig(
        mlstm_block=mlstm if len(cfg.slstm_at) < cfg.layers else None,
        slstm_block=slstm if cfg.slstm_at else None,
        context_length=context_length, num_blocks=cfg.layers, embedding_dim=cfg.embed, slstm_at=cfg.slstm_at,
        vocab_size=cfg.vocab_size, tie_weights=cfg.tie_weights, dropout=cfg.dropout)


class XLSTMLib(LanguageModel):
    """The library's xLSTMLMModel (as `self.lm`) with state by recomputation over the last block_size tokens.

    forward(idx (B, T), state) -> logits (B, T, V), state = {"context": (B, <= block_size) int64}."""

    carries_state = False  # the state is a finite window, not the exact recurrence: evaluate window by window

    def __init__(self, config: XLSTMLibConfig):
        super().__init__()
        self.config = cfg = config
        xl = import_xlstm()
        self.lm = xl.xLSTMLMModel(library_config(cfg, 2 * cfg.block_size))
        self.lm.reset_parameters()  # the constructor leaves the embedding at nn.Embedding's N(0, 1)
        self._context = 2 * cfg.block_size

    def _ensure_context(self, T: int) -> None:
        """The mLSTM cells hold a (context, context) causal mask buffer; grow it for longer inputs."""
        if T <= self._context:
            return
        for block in self.lm.xlstm_block_stack.blocks:
            cell = getattr(block.xlstm, "mlstm_cell", None)
            if cell is not None:
                cell.causal_mask = torch.ones(T, T, dtype=torch.bool, device=cell.causal_mask.device).tril()
        self._context = T

    def forward(self, idx: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """idx (B, T) int64 -> logits (B, T, V), state after the last position."""
        T = idx.shape[1]
        ctx = idx if state is None else torch.cat([state["context"].to(idx.device), idx], dim=1)  # (B, W + T)
        self._ensure_context(ctx.shape[1])
        logits = self.lm(ctx)[:, -T:]  # (B, T, V)
        return logits, {"context": ctx[:, -self.config.block_size:]}

    @property
    def exact_context(self) -> int:
        return self.config.block_size  # each step sees the window and itself: exact while that is all the text

    def embedding_matrix(self) -> Tensor:
        return self.lm.token_embedding.weight


# ----------------------------------------------------------------------------------------------------------
# weights: ours -> library (the parity tests and anyone comparing the two)
# ----------------------------------------------------------------------------------------------------------


def _weight_pairs(ours: XLSTM, lib: nn.Module) -> list[tuple[Tensor, Tensor]]:
    """(our tensor, library tensor) for every weight stored in the same layout in both."""
    if ours.proj_in is not None:
        raise ValueError("copying weights needs embed == hidden: the library has no in / out projections")
    pairs = [(ours.wte.weight, lib.token_embedding.weight),
             (ours.ln_f.weight, lib.xlstm_block_stack.post_blocks_norm.weight)]
    if not ours.config.tie_weights:
        pairs.append((ours.lm_head.weight, lib.lm_head.weight))
    for ob, lb in zip(ours.blocks, lib.xlstm_block_stack.blocks, strict=True):
        x = lb.xlstm
        pairs += [(ob.norm.weight, lb.xlstm_norm.weight), (ob.conv.weight, x.conv1d.conv.weight),
                  (ob.conv.bias, x.conv1d.conv.bias)]
        if isinstance(ob, SLSTMBlock):
            pairs += [(ob.igate.weight, x.fgate.weight), (ob.fgate.weight, x.igate.weight),  # the name swap
                      (ob.zgate.weight, x.zgate.weight), (ob.ogate.weight, x.ogate.weight),
                      (ob.group_norm.weight, x.group_norm.weight), (ob.ffn_norm.weight, lb.ffn_norm.weight),
                      (ob.ffn_up.weight, lb.ffn.proj_up.weight), (ob.ffn_down.weight, lb.ffn.proj_down.weight)]
        else:
            pairs += [(getattr(ob, n).weight, getattr(x, n).weight)
                      for n in ["proj_up", "q_proj", "k_proj", "v_proj", "proj_down"]]
            pairs += [(ob.learnable_skip, x.learnable_skip), (ob.outnorm.weight, x.mlstm_cell.outnorm.weight)]
            pairs += [(getattr(ob, n).weight, getattr(x.mlstm_cell, n).weight) for n in ["igate", "fgate"]]
            pairs += [(getattr(ob, n).bias, getattr(x.mlstm_cell, n).bias) for n in ["igate", "fgate"]]
    return pairs


def _slstm_pairs(ours: XLSTM, lib: nn.Module) -> list[tuple[nn.Module, nn.Module]]:
    return [(ob, lb.xlstm.slstm_cell) for ob, lb in zip(ours.blocks, lib.xlstm_block_stack.blocks, strict=True)
            if isinstance(ob, SLSTMBlock)]


@torch.no_grad()
def copy_weights(ours: XLSTM, lib: nn.Module) -> None:
    """Copy our XLSTM's weights into the library's xLSTMLMModel `lib` (same settings, embed == hidden).

    Norm gains are offsets from 1 in both. The library's sLSTMLayer feeds its `fgate` module into the
    input-gate slot and `igate` into the forget slot, so those two swap; its sLSTM recurrent kernel and
    bias live in backend-internal layouts, converted from our (external) layouts by the cell's own helpers."""
    for ours_w, lib_w in _weight_pairs(ours, lib):
        lib_w.copy_(ours_w)
    for ob, cell in _slstm_pairs(ours, lib):
        cell._recurrent_kernel_.copy_(cell._recurrent_kernel_ext2int(ob.R))
        cell._bias_.copy_(cell._bias_ext2int(ob.bias))


@torch.no_grad()
def load_library_weights(ours: XLSTM, lib: nn.Module) -> None:
    """The reverse of copy_weights: the library's xLSTMLMModel weights into our XLSTM."""
    for ours_w, lib_w in _weight_pairs(ours, lib):
        ours_w.copy_(lib_w)
    for ob, cell in _slstm_pairs(ours, lib):
        ob.R.copy_(cell._recurrent_kernel_int2ext(cell._recurrent_kernel_).view_as(ob.R))
        ob.bias.copy_(cell._bias_int2ext(cell._bias_).view_as(ob.bias))
