"""Stacked LSTM language model (Zaremba et al. 2014 style): embedding -> LSTM -> (LayerNorm) -> tied head.

The state (h, c) is carried across truncated-BPTT segments by the trainer and across tokens by the
generator; cuDNN / the fused CPU kernel does the time loop.
"""

from __future__ import annotations

import torch
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
        # locked dropout runs the layers one by one through these parameter-less (meta) one-layer shells,
        # fed the stack's own weights: a plain list, so neither state_dict nor .to() sees them
        self._layer_shells = [nn.LSTM(c.embed if j == 0 else c.hidden, c.hidden, 1, batch_first=True, device="meta")
                              for j in range(c.layers)] if c.locked_dropout else []
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
        x = self._dropout(self.embedding(idx))  # (B, T, E)
        out, (h, c) = self._recur(x, state)  # (B, T, H)
        out = self._dropout(self.norm(out))
        if self.proj is not None:
            out = self.proj(out)  # (B, T, E)
        return self.head(out), (h, c)

    def _locks_masks(self) -> bool:
        """Whether this forward draws one dropout mask per sequence (--locked_dropout, training)."""
        return self.training and self.config.locked_dropout and self.config.dropout > 0

    def _dropout(self, x: Tensor) -> Tensor:
        """x (B, T, D): --dropout, with one mask per sequence (B, 1, D) under --locked_dropout."""
        if not self._locks_masks():
            return self.drop(x)
        keep = 1 - self.drop.p  # the rate --dropout_warmup sets, as for nn.Dropout
        return x * x.new_empty(x.shape[0], 1, x.shape[2]).bernoulli_(keep).div_(keep)

    def _recur(self, x: Tensor, state: tuple[Tensor, Tensor] | None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """nn.LSTM, with its hidden-to-hidden matrices dropped out while training (weight drop): passed in
        through functional_call, so the fused kernel still runs the time loop and the gradient reaches the
        weights through the mask. Under locked dropout (training) the layers run one by one."""
        c = self.config
        locked = self._locks_masks() and c.layers > 1
        if not (locked or (self.training and c.weight_drop > 0)):
            return self.rnn(x, state)
        weights = dict(self.rnn.named_parameters())
        if c.weight_drop > 0:
            weights.update({name: F.dropout(w, c.weight_drop) for name, w in weights.items()
                            if name.startswith("weight_hh")})
        if not locked:
            return functional_call(self.rnn, weights, (x, state))
        return self._recur_by_layer(x, state, weights)

    def _recur_by_layer(self, x: Tensor, state: tuple[Tensor, Tensor] | None,
                        weights: dict[str, Tensor]) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """The stack one layer at a time, each layer's output dropped with one mask for all its time steps
        (nn.LSTM's dropout between layers draws one per token); each layer is still one fused-kernel call."""
        hs, cs = [], []
        for j, shell in enumerate(self._layer_shells):
            if j:
                x = self._dropout(x)
            layer = {f"{kind}_l0": weights[f"{kind}_l{j}"] for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
            x, (h, c) = functional_call(shell, layer, (x, None if state is None else (state[0][j:j + 1], state[1][j:j + 1])))
            hs.append(h)
            cs.append(c)
        return x, (torch.cat(hs), torch.cat(cs))  # (B, T, H); (layers, B, H) each

    def embedding_matrix(self) -> Tensor:
        return self.embedding.weight
