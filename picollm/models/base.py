"""The one interface every model family implements.

    logits, state = model(idx, state)

idx is (B, T) int64 token ids; logits is (B, T, V); state is whatever the family needs to continue
exactly where the call stopped (the KV cache for the transformer, (h, c, ...) for the recurrent families,
the last k-1 tokens for the K-gram MLP). Training with carried state (truncated BPTT), evaluation and
token-by-token generation all go through this one call, so stepping one token at a time with the state
gives the same logits as a single forward pass over the whole sequence (over any length, or up to
`exact_context` tokens for a family whose state is a window of the last tokens).

A state is a nested structure of tuples / lists / dicts of tensors (and ints), so it can be detached,
moved between devices and saved in a checkpoint loaded with `torch.load(..., weights_only=True)`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

State = Any  # nested tuples / lists / dicts of Tensors (and plain ints); None means "start of text"


class LanguageModel(nn.Module):
    """Base class: subclasses set `config` and implement `forward`."""

    #: True when the state is bounded and carrying it across segments is exact and cheap
    #: (recurrent families, K-gram). The transformer's KV cache grows, so evaluation starts each
    #: segment afresh instead.
    carries_state: bool = True

    def forward(self, idx: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """idx (B, T) int64 -> logits (B, T, V), state after the last position."""
        raise NotImplementedError

    def num_params(self) -> int:
        """Number of trainable parameters (tied weights counted once)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    @property
    def max_context(self) -> int | None:
        """Longest sequence the model can attend to at once (None: unbounded)."""
        return None

    @property
    def exact_context(self) -> int | None:
        """Longest text over which stepping with the state equals one forward pass over it all (None: any
        length). A state that is a window of the last tokens (xlstm_lib's) drifts from the full forward beyond."""
        return None

    def embedding_matrix(self) -> Tensor:
        """(V, E) input embedding weights, used for nearest-neighbour annotations."""
        raise NotImplementedError


def map_state(fn, state: State) -> State:
    """Apply fn to every tensor in a nested state (e.g. `Tensor.detach`, `.to(device)`)."""
    if state is None:
        return None
    if isinstance(state, Tensor):
        return fn(state)
    if isinstance(state, tuple):
        return tuple(map_state(fn, s) for s in state)
    if isinstance(state, list):
        return [map_state(fn, s) for s in state]
    if isinstance(state, dict):
        return {k: map_state(fn, v) for k, v in state.items()}
    return state


def detach_state(state: State) -> State:
    """Cut the autograd history of a carried state (truncated BPTT)."""
    return map_state(torch.Tensor.detach, state)
