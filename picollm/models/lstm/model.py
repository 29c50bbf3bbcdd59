"""Stacked LSTM language model (Zaremba et al. 2014 style): embedding -> LSTM -> (LayerNorm) -> tied head.

The state (h, c) is carried across truncated-BPTT segments by the trainer and across tokens by the
generator; cuDNN / the fused CPU kernel does the time loop.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from picollm.models.base import LanguageModel
from picollm.models.lstm.config import LSTMConfig


class LSTM(LanguageModel):
    carries_state = True

    def __init__(self, config: LSTMConfig):
        super().__init__()
        self.config = c = config
        self.embedding = nn.Embedding(c.vocab_size, c.embed)
        self.drop = nn.Dropout(c.dropout)
        self.rnn = nn.LSTM(c.embed, c.hidden, c.layers, dropout=c.dropout if c.layers > 1 else 0.0, batch_first=True)
        self.norm = nn.LayerNorm(c.hidden) if c.norm else nn.Identity()
        out_dim = c.hidden
        self.proj = None
        if c.tie_weights and c.hidden != c.embed:
            self.proj = nn.Linear(c.hidden, c.embed, bias=False)
            out_dim = c.embed
        self.head = nn.Linear(out_dim, c.vocab_size)
        init_range = 0.1  # the word_language_model / Zaremba initialisation
        nn.init.uniform_(self.embedding.weight, -init_range, init_range)
        if c.tie_weights:
            self.head.weight = self.embedding.weight
        else:
            nn.init.uniform_(self.head.weight, -init_range, init_range)
        nn.init.zeros_(self.head.bias)
        if c.init_range > 0:
            for p in self.parameters():
                nn.init.uniform_(p, -c.init_range, c.init_range)

    def forward(self, idx: Tensor, state: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """idx (B, T) -> logits (B, T, V); state (h, c), each (layers, B, hidden)."""
        x = self.drop(self.embedding(idx))  # (B, T, E)
        out, (h, c) = self._recur(x, state)  # (B, T, H)
        out = self.drop(self.norm(out))
        if self.proj is not None:
            out = self.proj(out)  # (B, T, E)
        return self.head(out), (h, c)

    def _recur(self, x: Tensor, state: tuple[Tensor, Tensor] | None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """nn.LSTM, with its hidden-to-hidden matrices dropped out while training (weight drop): passed in
        through functional_call, so the fused kernel still runs the time loop and the gradient reaches the
        weights through the mask."""
        p = self.config.weight_drop
        if not (self.training and p > 0):
            return self.rnn(x, state)
        dropped = {name: F.dropout(w, p) for name, w in self.rnn.named_parameters() if name.startswith("weight_hh")}
        return functional_call(self.rnn, dropped, (x, state))

    def embedding_matrix(self) -> Tensor:
        return self.embedding.weight
