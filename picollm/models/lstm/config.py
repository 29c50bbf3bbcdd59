"""The LSTM's settings and recipe (no torch: a dry run fingerprints runs without building a model)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from picollm.core.errors import ConfigError


@dataclass
class LSTMConfig:
    vocab_size: int
    embed: int = 64
    hidden: int = 128
    """LSTM cell size."""
    layers: int = 2
    dropout: float = 0.0
    """Dropout on the embeddings, between layers and on the outputs (Zaremba et al.)."""
    tie_weights: bool = True
    """Share embedding and output weights (a projection hidden -> embed is added when they differ)."""
    norm: bool = True
    """LayerNorm on the LSTM outputs (the paper's LSTM has none: turn it off to reproduce it)."""
    init_range: float = 0.0
    """> 0: every parameter uniform(-init_range, init_range), as Zaremba et al.; 0: the default below."""
    weight_drop: float = 0.0
    """DropConnect on the hidden-to-hidden matrices while training (Merity et al. 2017, AWD-LSTM): one mask
    per step for all time steps, so the recurrence itself is regularised, which dropout on activations is not."""
    locked_dropout: bool = False
    """--dropout with one mask per sequence, held over its time steps (variational dropout, Gal & Ghahramani
    2016; AWD-LSTM's LockedDropout) on the embeddings, between layers and on the outputs, where nn.LSTM and
    nn.Dropout draw a new mask for every token."""
    # --optimizer auto / --schedule auto: at the fast preset's 2 x 128, Muon + warmup-stable-decay reach in
    # 1,000 steps a val loss of 1.50 where AdamW + cosine reach 1.89 in 2,000 (README, "Time to quality");
    # --batching auto: carried-state streams, 1.50 where random windows reach 1.52 in those 1,000 steps
    RECIPE: ClassVar[dict[str, str]] = {"optimizer": "muon", "schedule": "wsd", "batching": "stream"}

    def __post_init__(self) -> None:
        if self.layers < 1 or self.hidden < 1 or self.embed < 1:
            raise ConfigError("lstm: --layers, --hidden and --embed must be >= 1")
        if not 0 <= self.weight_drop < 1:
            raise ConfigError(f"lstm: --weight_drop must be in [0, 1); got {self.weight_drop}")
        if self.init_range < 0:
            raise ConfigError(f"lstm: --init_range must be >= 0; got {self.init_range}")
