"""Tokenized splits and batching: pure tensor indexing over the corpora of picollm.data.corpora.

- streams (for recurrent models, TBPTT): batchify() cuts the token sequence into B contiguous streams,
  stream_segment() walks them T tokens at a time so the hidden state can be carried across segments;
- random windows (for everything else): random_windows() samples B windows of T+1 tokens.
"""

from __future__ import annotations

import torch
from torch import Tensor

from picollm.core.errors import DataError
from picollm.data.corpora import SPLITS, corpus_identity, default_tokenizer, load_splits
from picollm.data.tokenizers import Tokenizer, build_tokenizer

_PREPARED: dict[tuple, tuple[Tokenizer, dict[str, Tensor]]] = {}


def prepare_data(
    corpus: str, tokenizer_kind: str, bpe_vocab_size: int | None = None, tokenizer: Tokenizer | None = None
) -> tuple[Tokenizer, dict[str, Tensor]]:
    """Tokenizer (built from the train split unless given) and the three splits as 1-D int64 tensors.

    Results for a built tokenizer are memoised in-process; the returned tensors are shared, do not modify them.
    """
    if tokenizer_kind == "auto":
        tokenizer_kind = default_tokenizer(corpus)
    vocab = (bpe_vocab_size or 2048) if tokenizer_kind == "bpe" else None
    key = (corpus_identity(corpus), tokenizer_kind, vocab)
    if tokenizer is None and key in _PREPARED:
        return _PREPARED[key]
    splits = load_splits(corpus)
    if tokenizer is None:
        tok = build_tokenizer(tokenizer_kind, splits["train"], vocab or 2048)
    else:
        tok = tokenizer
    tensors = {s: tok.encode_tensor(splits[s]) for s in SPLITS}
    if tokenizer is None:
        _PREPARED[key] = (tok, tensors)
    return tok, tensors


def check_length(data: Tensor, block_size: int, what: str = "data split") -> None:
    """A split needs block_size + 1 tokens for one (input, target) window."""
    if data.numel() < block_size + 1:
        raise DataError(
            f"{what} has {data.numel()} tokens, fewer than block_size + 1 = {block_size + 1}; "
            f"use a smaller --block_size or a larger corpus"
        )


def batchify(data: Tensor, batch_size: int) -> Tensor:
    """Cut a 1-D token tensor into batch_size contiguous streams, (B, N), dropping the remainder."""
    n = data.numel() // batch_size
    if n < 2:
        raise DataError(
            f"data split has {data.numel()} tokens, too few for {batch_size} streams of at least 2 tokens; "
            f"use a smaller --batch_size"
        )
    return data[: n * batch_size].view(batch_size, n).contiguous()


def num_segments(streams: Tensor, block_size: int) -> int:
    """Segments of stream_segment(): every position but the last of each stream is an input once."""
    return -(-(streams.size(1) - 1) // block_size)


def stream_segment(streams: Tensor, index: int, block_size: int) -> tuple[Tensor, Tensor]:
    """Segment index of the streams: x = streams[:, i*T:(i+1)*T], y = x shifted by one (last may be shorter)."""
    if not 0 <= index < num_segments(streams, block_size):
        raise IndexError(f"segment {index} out of range [0, {num_segments(streams, block_size)})")
    start = index * block_size
    seq = min(block_size, streams.size(1) - 1 - start)
    return streams[:, start : start + seq], streams[:, start + 1 : start + 1 + seq]


def random_windows(
    data: Tensor, batch_size: int, block_size: int, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """batch_size random windows: x (B, T) and the targets y (B, T), x shifted left by one."""
    check_length(data, block_size)
    starts = torch.randint(data.numel() - block_size, (batch_size,), generator=generator, device=generator.device)
    idx = starts.to(data.device)[:, None] + torch.arange(block_size + 1, device=data.device)  # (B, T+1)
    chunk = data[idx]
    return chunk[:, :-1], chunk[:, 1:]
