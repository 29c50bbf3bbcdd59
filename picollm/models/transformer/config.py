"""The transformer's settings and recipe (no torch: a dry run fingerprints runs without building a model)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from picollm.core.errors import ConfigError


@dataclass
class TransformerConfig:
    vocab_size: int
    block_size: int = 64
    """Longest context; learned position embeddings exist for this many positions."""
    embed: int = 64
    """Model width (n_embd)."""
    layers: int = 2
    heads: int = 4
    dropout: float = 0.0
    positional: str = "learned"
    """'learned' absolute position embeddings or 'rotary' (RoPE) on queries and keys."""
    tie_weights: bool = True
    qk_norm: bool = False
    """RMS-normalise each head's queries and keys (no gain), bounding the attention logits."""
    qk_scale: float = 1.0
    """With qk_norm: the logits' scale in units of 1/sqrt(head_size). Unit-RMS queries and keys cap a logit at
    sqrt(head_size) * qk_scale (5.7 at head size 32 and scale 1). The recipe's 1.5 beat 1 on each of three seeds
    and 2 on one (README, "Time to quality"); modded-nanogpt's 0.12 at head size 128 is 1.36."""
    mlp_activation: str = "gelu"
    """'gelu' or 'relu2' (relu(x)**2)."""
    zero_init_proj: bool = False
    """Start every block as the identity: attention and MLP output projections (and an untied head) at 0."""
    split_qkv: bool = False
    """Hold the query, key and value maps as three C x C matrices rather than one 3C x C. The function, the
    initialisation and AdamW's steps are the same; Muon orthogonalises each map on its own (as modded-nanogpt
    does), which the recipe adopts: 0.007 to 0.017 lower val loss after 2,000 steps on each of four seeds (README,
    "Time to quality")."""
    canon: int = 0
    """Width of the Canon layers (Allen-Zhu 2025), 0 for none: a block's normalised MLP input (and with canon_at
    'attention+mlp' its attention input) h becomes h + a causal depthwise convolution of h over the last `canon`
    positions, so every channel mixes in its own recent past before the MLP or attention reads it. The run
    settings' default is 4 before the MLP, with attn_gate and value_embed (docs/results.md, "Time to quality")."""
    canon_at: str = "attention+mlp"
    """Where the Canon layers go: before attention and the MLP, or before the MLP only ('mlp'), which gave as low
    a loss at half the cost (docs/results.md, "Time to quality")."""
    attn_gate: bool = False
    """Gated attention (Qiu et al. 2025): each head's output times 2 sigmoid(h w_head), h the attention's input;
    zero-initialised, so every gate starts open at 1. Lets a head switch itself off for a token."""
    value_embed: bool = False
    """Value embeddings (after modded-nanogpt's): each layer adds the token's RMS-normalised embedding, times a
    gain per channel of its own (zero-initialised), to attention's values, so a value can carry what the token is
    beside what the layer computed from it. modded-nanogpt's separate tables (vocabulary x embed per layer) did as
    well on Tiny Shakespeare but would add millions of parameters at a word-level vocabulary; these add embed
    per layer (docs/results.md, "Time to quality")."""
    embed_norm: bool = False
    """RMS-normalise the token embeddings before the first block (modded-nanogpt), times a learned gain per channel
    started at 0.1: the embeddings' scale against the blocks' outputs is then learned, not set by the embedding's
    init and weight decay. The run settings' default (docs/results.md, "Time to quality")."""
    # the defaults of --optimizer, --schedule, --lr, --min_lr_ratio, --decay_frac, --qk_scale, --split_qkv: at
    # nanoGPT's CPU shape, 1.512 after 2,000 steps (mean of four seeds, before the Canon layers, gates, value
    # embeddings and normalised embeddings, which take it to 1.489; without split_qkv 1.525), where lr 1e-3, a 40%
    # decay to 0.1, scale 1 and the fused QKV matrix reached 1.548 (docs/results.md, "Time to quality")
    RECIPE: ClassVar[dict[str, Any]] = {"optimizer": "muon", "schedule": "wsd", "lr": 3e-3, "min_lr_ratio": 0.0,
                                        "decay_frac": 1.0, "qk_scale": 1.5, "split_qkv": True}

    def __post_init__(self) -> None:
        if self.embed % self.heads != 0:
            raise ConfigError(f"transformer: --embed {self.embed} must be divisible by --heads {self.heads}")
        if self.positional == "rotary" and (self.embed // self.heads) % 2 != 0:
            raise ConfigError(f"transformer: rotary positions need an even head size; embed/heads = {self.embed // self.heads}")
        if self.positional not in ("learned", "rotary"):
            raise ConfigError(f"transformer: --positional must be learned or rotary; got {self.positional!r}")
        if self.canon < 0:
            raise ConfigError(f"transformer: --canon must be 0 (none) or a width >= 1; got {self.canon}")
        if self.canon_at not in ("attention+mlp", "mlp"):
            raise ConfigError(f"transformer: --canon_at must be attention+mlp or mlp; got {self.canon_at!r}")
        if self.mlp_activation not in ("gelu", "relu2"):
            raise ConfigError(f"transformer: --mlp_activation must be gelu or relu2; got {self.mlp_activation!r}")
