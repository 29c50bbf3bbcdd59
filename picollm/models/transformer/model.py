"""GPT-style decoder-only transformer (after nanoGPT): pre-norm blocks, causal attention through
`F.scaled_dot_product_attention`, learned or rotary positions, tied embeddings and a KV cache; optionally
(after modded-nanogpt) RMS-normalised queries and keys, normalised embeddings times a learned gain, value
embeddings, a ReLU^2 MLP and zero-initialised output projections; Canon layers (Allen-Zhu 2025) before attention
and the MLP; gated attention (Qiu et al. 2025).

The state is the KV cache: one (k, v) pair per layer, each (B, n_head, T_past, head_size), and with Canon
layers the last canon - 1 inputs of each of them, (B, canon - 1, C). A forward with a cache attends to the cached
positions, so decoding one token at a time costs one position's work per layer instead of the whole prefix.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from picollm.models.base import LanguageModel
from picollm.models.transformer.config import TransformerConfig

KVCache = list[tuple[Tensor, ...]]


def rotary_cos_sin(positions: Tensor, head_size: int, base: float = 10000.0) -> tuple[Tensor, Tensor]:
    """positions (T,) -> cos, sin each (T, head_size/2) for RoPE."""
    inv_freq = 1.0 / (base ** (torch.arange(0, head_size, 2, device=positions.device, dtype=torch.float32) / head_size))
    angles = positions.float()[:, None] * inv_freq[None, :]
    return angles.cos(), angles.sin()


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """x (B, nh, T, hs): rotate each (even, odd) pair by its position's angle.

    The pair is read as the complex number even + i odd and multiplied by cos + i sin: the same rotation as
    (even cos - odd sin, even sin + odd cos), in a third of the time of slicing and re-interleaving on a CPU."""
    pairs = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)))
    return torch.view_as_real(pairs * torch.complex(cos, sin)).flatten(-2).type_as(x)


class CausalSelfAttention(nn.Module):
    def __init__(self, c: TransformerConfig):
        super().__init__()
        self.n_head, self.head_size = c.heads, c.embed // c.heads
        self.split_qkv = c.split_qkv
        if c.split_qkv:  # created in this order, they draw the same initial weights as the fused matrix
            self.q = nn.Linear(c.embed, c.embed, bias=False)
            self.k = nn.Linear(c.embed, c.embed, bias=False)
            self.v = nn.Linear(c.embed, c.embed, bias=False)
        else:
            self.qkv = nn.Linear(c.embed, 3 * c.embed, bias=False)
        self.proj = nn.Linear(c.embed, c.embed, bias=False)
        self.dropout = c.dropout
        self.resid_drop = nn.Dropout(c.dropout)
        self.rotary = c.positional == "rotary"
        self.qk_norm = c.qk_norm
        self.scale = c.qk_scale / math.sqrt(self.head_size) if c.qk_norm else None  # None: SDPA's 1/sqrt(hs)
        self.gate = HeadGate(c.embed, c.heads) if c.attn_gate else None
        # value embeddings: zero-initialised, so the values start as without them
        self.value_gain = nn.Parameter(torch.zeros(c.embed)) if c.value_embed else None

    def forward(self, x: Tensor, cache: tuple[Tensor, Tensor] | None, positions: Tensor,
                tokens: Tensor | None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """x (B, T, C), the block's normalised input; tokens (B, T, C), the RMS-normalised token embeddings (for
        the value embeddings; None without them)."""
        B, T, C = x.shape
        if self.split_qkv:  # one matmul, as fast as the fused matrix and equal to it bit for bit
            qkv = F.linear(x, torch.cat([self.q.weight, self.k.weight, self.v.weight]))
        else:
            qkv = self.qkv(x)
        q, k, v = qkv.split(C, dim=2)
        if self.value_gain is not None:
            v = v + (tokens * self.value_gain).to(v.dtype)
        q = q.view(B, T, self.n_head, self.head_size).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, self.head_size).transpose(1, 2)
        v = v.view(B, T, self.n_head, self.head_size).transpose(1, 2)
        if self.qk_norm:
            q, k = F.rms_norm(q, (self.head_size,)), F.rms_norm(k, (self.head_size,))
        if self.rotary:
            cos, sin = rotary_cos_sin(positions, self.head_size)
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        past = 0
        if cache is not None:
            past = cache[0].shape[2]
            k = torch.cat([cache[0], k], dim=2)  # (B, nh, past+T, hs)
            v = torch.cat([cache[1], v], dim=2)
        dropout = self.dropout if self.training else 0.0
        if past == 0:
            y = attend(q, k, v, dropout_p=dropout, is_causal=True, scale=self.scale)
        elif T == 1:
            y = attend(q, k, v, dropout_p=dropout, scale=self.scale)  # one query sees every cached key
        else:
            # query i sits at absolute position past + i and may see keys 0 .. past + i
            mask = torch.ones(T, past + T, dtype=torch.bool, device=x.device).tril(diagonal=past)
            y = attend(q, k, v, attn_mask=mask, dropout_p=dropout, scale=self.scale)
        if self.gate is not None:
            y = y * self.gate(x)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C)
        return self.resid_drop(self.proj(y)), (k, v)


def attend(q: Tensor, k: Tensor, v: Tensor, **kwargs) -> Tensor:
    """F.scaled_dot_product_attention, in fp32 on a CPU under bf16 autocast: there the bf16 kernel (forward +
    backward) takes 3.8x the fp32 one's time at head size 32 (bench/precision_speed.py), where CUDA's bf16
    kernels are the fast ones."""
    if q.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
        with torch.autocast("cpu", enabled=False):
            return F.scaled_dot_product_attention(q.float(), k.float(), v.float(), **kwargs)
    return F.scaled_dot_product_attention(q, k, v, **kwargs)


class HeadGate(nn.Module):
    """Gated attention's gates, one per head and token: 2 sigmoid(x w_head), the weights zero-initialised so each
    gate starts at 1. A row is one head's switch, not a map between hidden spaces, so AdamW trains it, not Muon."""

    adamw_only = True  # read by picollm.train.optimizers.hidden_matrices

    def __init__(self, channels: int, heads: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(heads, channels))

    def forward(self, x: Tensor) -> Tensor:
        """x (B, T, C) -> gates (B, nh, T, 1), to multiply each head's output."""
        return 2 * torch.sigmoid(F.linear(x, self.weight)).transpose(1, 2).unsqueeze(-1)


class MLP(nn.Module):
    def __init__(self, c: TransformerConfig):
        super().__init__()
        self.fc = nn.Linear(c.embed, 4 * c.embed, bias=False)
        self.proj = nn.Linear(4 * c.embed, c.embed, bias=False)
        self.drop = nn.Dropout(c.dropout)
        self.relu2 = c.mlp_activation == "relu2"

    def forward(self, x: Tensor) -> Tensor:
        h = self.fc(x)
        h = F.relu(h).square() if self.relu2 else F.gelu(h)
        return self.drop(self.proj(h))


class Canon(nn.Module):
    """h + a causal depthwise convolution of h over the last `width` positions: each channel adds a learned mix
    of its own values at the positions before (a Canon layer, Allen-Zhu 2025). Zero-initialised, so a block starts
    as it would without it. The weight has conv1d's layout, (channels, 1, width), and as a 3-D tensor it trains
    with AdamW, not Muon."""

    def __init__(self, channels: int, width: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(channels, 1, width))

    def forward(self, h: Tensor, before: Tensor | None) -> tuple[Tensor, Tensor]:
        """h (B, T, C); before: the inputs at the width - 1 positions before h, (B, width - 1, C), None at the
        start of a text (zeros). Returns h mixed, and the width - 1 last inputs for the next call."""
        B, T, C = h.shape
        width = self.weight.size(-1)
        if before is None:
            before = h.new_zeros(B, width - 1, C)
        x = torch.cat([before, h], dim=1)  # (B, width - 1 + T, C)
        # `width` multiply-adds of shifted inputs, not F.conv1d(groups=C): the same sums, forward and backward 1.6x
        # as fast on a CPU (bench/canon.py); the taps contiguous, as a strided row does not vectorise
        taps = self.weight[:, 0].t().contiguous().to(h.dtype)  # (width, C): tap j weighs the input width - 1 - j back
        out = h
        for j in range(width):
            out = torch.addcmul(out, x[:, j : j + T], taps[j])
        return out, x[:, T:]


class Block(nn.Module):
    def __init__(self, c: TransformerConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(c.embed)
        self.attn = CausalSelfAttention(c)
        self.ln_2 = nn.LayerNorm(c.embed)
        self.mlp = MLP(c)
        self.canon_attn = Canon(c.embed, c.canon) if c.canon and c.canon_at == "attention+mlp" else None
        self.canon_mlp = Canon(c.embed, c.canon) if c.canon else None

    def forward(self, x: Tensor, cache: tuple[Tensor, ...] | None, positions: Tensor, tokens: Tensor | None):
        """cache: attention's (k, v), then the last inputs of each Canon layer, in order."""
        befores = iter(cache[2:]) if cache else None
        canon_state: tuple[Tensor, ...] = ()
        h = self.ln_1(x)
        if self.canon_attn is not None:
            h, before = self.canon_attn(h, next(befores) if befores else None)
            canon_state += (before,)
        a, state = self.attn(h, cache[:2] if cache else None, positions, tokens)
        x = x + a
        h = self.ln_2(x)
        if self.canon_mlp is not None:
            h, before = self.canon_mlp(h, next(befores) if befores else None)
            canon_state += (before,)
        return x + self.mlp(h), (*state, *canon_state)


class Transformer(LanguageModel):
    carries_state = False  # the KV cache grows with the text; evaluation restarts it every window

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.config = c = config
        self.wte = nn.Embedding(c.vocab_size, c.embed)
        # started small: normalised embeddings at full scale (RMS 1 against the blocks' 0.02-scale outputs) make the
        # first few hundred steps slower (docs/results.md, "Time to quality")
        self.embed_gain = nn.Parameter(torch.full((c.embed,), 0.1)) if c.embed_norm else None
        self.wpe = nn.Embedding(c.block_size, c.embed) if c.positional == "learned" else None
        self.drop = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList(Block(c) for _ in range(c.layers))
        self.ln_f = nn.LayerNorm(c.embed)
        self.head = nn.Linear(c.embed, c.vocab_size, bias=False)
        if c.tie_weights:
            self.head.weight = self.wte.weight
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("proj.weight"):  # GPT-2: scale residual projections by depth
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * c.layers))
        if c.zero_init_proj:
            for name, p in self.named_parameters():
                if name.endswith("proj.weight") or (name == "head.weight" and not c.tie_weights):
                    nn.init.zeros_(p)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    @property
    def max_context(self) -> int | None:
        return self.config.block_size if self.wpe is not None else None

    def forward(self, idx: Tensor, state: KVCache | None = None) -> tuple[Tensor, KVCache]:
        """idx (B, T) -> logits (B, T, V); state: per-layer (k, v), each (B, nh, T_past, hs)."""
        B, T = idx.shape
        past = state[0][0].shape[2] if state else 0
        if self.wpe is not None and past + T > self.config.block_size:
            raise ValueError(f"sequence of {past + T} tokens exceeds block_size {self.config.block_size} "
                             "(learned positions); crop the context")
        positions = torch.arange(past, past + T, device=idx.device)
        x = self.wte(idx)  # (B, T, C)
        tokens = F.rms_norm(x, (x.size(-1),)) if self.config.value_embed or self.config.embed_norm else None
        if self.embed_gain is not None:
            x = tokens * self.embed_gain
        if self.wpe is not None:
            x = x + self.wpe(positions)
        x = self.drop(x)
        new_state: KVCache = []
        for i, block in enumerate(self.blocks):
            x, kv = block(x, state[i] if state else None, positions, tokens)
            new_state.append(kv)
        return self.head(self.ln_f(x)), new_state

    def embedding_matrix(self) -> Tensor:
        return self.wte.weight
