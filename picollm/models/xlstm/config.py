"""The xLSTM's settings, recipe and block layout (no torch: a dry run fingerprints runs without building a
model)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, ClassVar

from picollm.core.errors import ConfigError


def _round_up(x: float, multiple: int) -> int:
    return int(math.ceil(x / multiple) * multiple)


def parse_ratio(ratio: str) -> tuple[int, int]:
    """'a:b' -> (a, b): a mLSTM blocks for every b sLSTM blocks."""
    match = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", str(ratio))
    if not match or (int(match[1]) == 0 and int(match[2]) == 0):
        raise ConfigError(f"--xlstm_ratio must look like 'a:b' with integers a,b >= 0, not both 0; got {ratio!r}")
    return int(match[1]), int(match[2])


def slstm_positions(layers: int, ratio: str) -> list[int]:
    """Indices of the sLSTM blocks for xLSTM[a:b] with `layers` blocks, spread evenly.

    Rule: the first p blocks hold floor(p * b / (a + b)) sLSTM blocks, for every p. So each group of a + b
    blocks ends with its b sLSTM blocks spread evenly ("1:1" -> m s m s, "3:1" -> m m m s, "1:3" ->
    m s s s), and a stack shorter than one group may get fewer sLSTM blocks than the ratio (or none).
    """
    a, b = parse_ratio(ratio)
    count = [p * b // (a + b) for p in range(layers + 1)]
    return [j for j in range(layers) if count[j + 1] > count[j]]


@dataclass
class XLSTMConfig:
    vocab_size: int
    """number of token ids"""
    embed: int = 64
    """token embedding size (linear in / out projections when it differs from hidden)"""
    hidden: int = 128
    """block width: the residual stream's size"""
    layers: int = 2
    """number of blocks"""
    heads: int = 4
    """memory heads of every mLSTM and sLSTM cell"""
    dropout: float = 0.0
    """dropout after each block's output projection and on the sLSTM cell output"""
    io_dropout: float = 0.0
    """dropout on the token embeddings and on the last block's output (the LSTM's dropout covers both; the
    library's stack has none there)"""
    tie_weights: bool = True
    """share the input embedding and the output projection"""
    xlstm_ratio: str = "1:1"
    """xLSTM[a:b]: a mLSTM blocks for every b sLSTM blocks ('1:0' all mLSTM, '0:1' all sLSTM)"""

    # fixed architecture constants (class-level: the registry fills every *field* from the run config)
    # --optimizer, --schedule, --lr, --min_lr_ratio, --decay_frac and --batching left at auto / unset: at the fast
    # preset's 2 x 64, 1.71-1.76 after 1,000 steps (three seeds) and 1.82 after 500, where AdamW 1e-3 + cosine on
    # streams reached 1.84 after 2,000. Muon + WSD alone (on streams) gave 1.89-1.94 at 3e-3, because 1,000 steps
    # of 16 streams read only the first half of each stream's part of the text; random windows alone (AdamW +
    # cosine) 1.95 (README, "Time to quality")
    RECIPE: ClassVar[dict[str, Any]] = {"optimizer": "muon", "schedule": "wsd", "lr": 1e-2, "min_lr_ratio": 0.0,
                                        "decay_frac": 1.0, "batching": "random"}
    conv_kernel: ClassVar[int] = 4  # causal depthwise conv in front of q, k (mLSTM) and i, f (sLSTM)
    mlstm_proj_factor: ClassVar[float] = 2.0  # mLSTM up-projection
    qkv_blocksize: ClassVar[int] = 4  # q, k, v are block-diagonal with 4 x 4 blocks
    ffn_proj_factor: ClassVar[float] = 4 / 3  # sLSTM block's gated feed-forward
    round_to: ClassVar[int] = 64  # up-projection widths are rounded up to a multiple of this
    chunk_size: ClassVar[int] = 64  # mLSTM chunkwise form: tokens per chunk

    def __post_init__(self) -> None:
        for name in ["vocab_size", "embed", "hidden", "layers", "heads"]:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"xlstm: --{name} must be a positive integer; got {value!r}")
        for name in ("dropout", "io_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"xlstm: --{name} must be in [0, 1); got {getattr(self, name)}")
        if self.hidden % self.heads:
            raise ConfigError(f"xlstm: --hidden {self.hidden} must be divisible by --heads {self.heads}")
        slstm_at = slstm_positions(self.layers, self.xlstm_ratio)  # validates the ratio string
        if len(slstm_at) < self.layers and self.inner % self.heads:
            raise ConfigError(f"xlstm: the mLSTM width {self.inner} (2 * --hidden rounded up to a multiple of 64) "
                              f"must be divisible by --heads {self.heads}")

    @property
    def inner(self) -> int:
        """mLSTM block's up-projected width."""
        return _round_up(self.mlstm_proj_factor * self.hidden, self.round_to)

    @property
    def ffn_dim(self) -> int:
        """sLSTM block's feed-forward width."""
        return _round_up(self.ffn_proj_factor * self.hidden, self.round_to)

    @property
    def slstm_at(self) -> list[int]:
        return slstm_positions(self.layers, self.xlstm_ratio)
