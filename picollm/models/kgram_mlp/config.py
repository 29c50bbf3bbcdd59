"""The K-gram MLP's settings (no torch: a dry run fingerprints runs without building a model)."""

from __future__ import annotations

from dataclasses import dataclass

from picollm.core.errors import ConfigError

ACTIVATION_NAMES = ("relu", "gelu", "silu")


@dataclass
class KGramMLPConfig:
    vocab_size: int
    embed: int = 64
    """Embedding size of each of the k context tokens."""
    hidden: int = 128
    """Width of every hidden layer of the MLP."""
    k: int = 3
    """Number of previous tokens (including the current one) the MLP sees."""
    inner_layers: int = 1
    """Number of hidden layers (0 = a log-linear model over the concatenated embeddings)."""
    activation: str = "gelu"
    norm: bool = True
    """LayerNorm before each activation."""
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ConfigError(f"kgram_mlp: --k must be >= 1 (the number of context tokens); got {self.k}")
        if self.inner_layers < 0:
            raise ConfigError(f"kgram_mlp: --inner_layers must be >= 0; got {self.inner_layers}")
        if self.activation not in ACTIVATION_NAMES:
            raise ConfigError(f"kgram_mlp: --activation must be one of {', '.join(ACTIVATION_NAMES)}; got {self.activation!r}")
