"""K-gram MLP: the embeddings of the last k tokens, concatenated, through an MLP to next-token logits.

Every position is computed at once: the (B, T) ids are left-padded with the k-1 tokens of context
(the state), unfolded into (B, T, k) windows, embedded and pushed through the MLP in one batch.
Positions before the start of the text see a dedicated padding embedding.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from picollm.models.base import LanguageModel
from picollm.models.kgram_mlp.config import KGramMLPConfig

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU}


class KGramMLP(LanguageModel):
    carries_state = True

    def __init__(self, config: KGramMLPConfig):
        super().__init__()
        self.config = config
        c = config
        self.pad_id = c.vocab_size  # an extra embedding row for "before the start of the text"
        self.embedding = nn.Embedding(c.vocab_size + 1, c.embed)
        layers: list[nn.Module] = []
        width = c.k * c.embed
        for _ in range(c.inner_layers):
            layers.append(nn.Linear(width, c.hidden))
            if c.norm:
                layers.append(nn.LayerNorm(c.hidden))
            layers.append(ACTIVATIONS[c.activation]())
            if c.dropout > 0:
                layers.append(nn.Dropout(c.dropout))
            width = c.hidden
        self.mlp = nn.Sequential(*layers)
        self.head = nn.Linear(width, c.vocab_size)
        nn.init.normal_(self.embedding.weight, std=0.02)

    def forward(self, idx: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """idx (B, T) -> logits (B, T, V); state (B, k-1): the previous k-1 token ids (pad id at the start)."""
        B, T = idx.shape
        k = self.config.k
        if state is None:
            state = torch.full((B, k - 1), self.pad_id, dtype=idx.dtype, device=idx.device)
        context = torch.cat([state, idx], dim=1)  # (B, k-1+T)
        windows = context.unfold(1, k, 1)  # (B, T, k): window t ends at idx[:, t]
        x = self.embedding(windows).reshape(B, T, k * self.config.embed)  # (B, T, k*E)
        logits = self.head(self.mlp(x))  # (B, T, V)
        new_state = context[:, context.shape[1] - (k - 1):]  # (B, k-1)
        return logits, new_state

    def embedding_matrix(self) -> Tensor:
        return self.embedding.weight[: self.config.vocab_size]


