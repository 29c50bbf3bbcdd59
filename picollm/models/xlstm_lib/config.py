"""The library xLSTM's settings (no torch: a dry run fingerprints runs without building a model)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from picollm.core.errors import ConfigError
from picollm.models.xlstm.config import slstm_positions


@dataclass
class XLSTMLibConfig:
    vocab_size: int
    """number of token ids"""
    block_size: int = 64
    """training sequence length; also the recomputation window of the state"""
    embed: int = 64
    """width of the embedding and of every block (the library's embedding_dim)"""
    layers: int = 2
    """number of blocks"""
    heads: int = 4
    """memory heads of every mLSTM and sLSTM cell"""
    dropout: float = 0.0
    """the library's dropout (block outputs)"""
    tie_weights: bool = True
    """share the input embedding and the output projection"""
    xlstm_ratio: str = "1:1"
    """xLSTM[a:b]: a mLSTM blocks for every b sLSTM blocks, placed as in our xlstm"""

    conv_kernel: ClassVar[int] = 4
    qkv_blocksize: ClassVar[int] = 4
    mlstm_proj_factor: ClassVar[float] = 2.0
    ffn_proj_factor: ClassVar[float] = 4 / 3  # the library defaults to 1.3; 4/3 as in the paper and our xlstm

    def __post_init__(self) -> None:
        for name in ["vocab_size", "block_size", "embed", "layers", "heads"]:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"xlstm_lib: --{name} must be a positive integer; got {value!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"xlstm_lib: --dropout must be in [0, 1); got {self.dropout}")
        if self.embed % self.heads:
            raise ConfigError(f"xlstm_lib: --embed {self.embed} must be divisible by --heads {self.heads}")
        inner = math.ceil(self.mlstm_proj_factor * self.embed / 64) * 64
        if len(self.slstm_at) < self.layers and inner % self.heads:
            raise ConfigError(f"xlstm_lib: the mLSTM width {inner} (2 * --embed rounded up to a multiple of 64) "
                              f"must be divisible by --heads {self.heads}")

    @property
    def slstm_at(self) -> list[int]:
        return slstm_positions(self.layers, self.xlstm_ratio)  # validates the ratio string
