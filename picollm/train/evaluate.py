"""Held-out evaluation: per-token losses over contiguous streams, and the metrics training and analysis report."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from picollm.core.devices import autocast_context
from picollm.data import batching as data_mod
from picollm.models.base import LanguageModel

#: exp() overflows a float64 just above 709.78: the perplexity of a diverged model is capped there, not inf
MAX_LOG_PERPLEXITY = 700.0


def perplexity(loss: float) -> float:
    """exp(mean cross-entropy in nats), capped at exp(MAX_LOG_PERPLEXITY)."""
    return math.exp(min(loss, MAX_LOG_PERPLEXITY))


@torch.no_grad()
def token_losses(model: LanguageModel, data: torch.Tensor, batch_size: int, block_size: int,
                 device: torch.device, max_tokens: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-target (target id, loss, correct) over `data` read as `batch_size` contiguous streams.

    Recurrent families carry their state from one window to the next (exact full-history loss); the
    transformer starts every window afresh. Returns three 1-D CPU tensors of equal length.
    """
    if max_tokens:
        data = data[: max_tokens + 1]
    rows = max(1, min(batch_size, (len(data) - 1) // 2))
    streams = data_mod.batchify(data, rows).to(device)
    was_training = model.training
    model.eval()
    targets, losses, correct = [], [], []
    state = None
    with autocast_context(device):
        for i in range(data_mod.num_segments(streams, block_size)):
            x, y = data_mod.stream_segment(streams, i, block_size)
            logits, state = model(x, state if model.carries_state else None)
            logits = logits.float()
            losses.append(F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").cpu())  # rows: see train_step
            correct.append((logits.argmax(-1) == y).flatten().cpu())
            targets.append(y.flatten().cpu())
    model.train(was_training)
    return torch.cat(targets), torch.cat(losses), torch.cat(correct)


def evaluate(model: LanguageModel, data: torch.Tensor, batch_size: int, block_size: int,
             device: torch.device, max_tokens: int = 0) -> dict[str, float]:
    """Mean loss, perplexity and next-token accuracy on held-out data."""
    _, losses, correct = token_losses(model, data, batch_size, block_size, device, max_tokens)
    loss = losses.double().mean().item()
    return {"loss": loss, "perplexity": perplexity(loss), "accuracy": correct.double().mean().item(),
            "tokens": len(losses)}
