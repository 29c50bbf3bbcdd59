"""The training loss: cross-entropy over a batch's (B*T, V) logit rows, compiled where the softmax is large.

Eager, a bf16 batch's loss at a 10k vocabulary makes about six passes over (B*T, V) floats: the fp32 copy of
the logits, the log-softmax, the zeroed gradient nll_loss writes into, the log-softmax's backward and the
cast back to bf16. torch.compile fuses them into two kernels, forward and backward (at PTB's shape 2.5x
faster for fp32 logits, 4x for bf16 ones, `python bench/loss_layout.py`), with the same loss up to
rounding. Building those kernels costs seconds (inductor caches them across processes), so --compile_loss
auto compiles only where the logits are large enough to pay that back, on a CPU (the CUDA path is not timed
yet).

Evaluation keeps the eager loss: val losses stay comparable with every run trained before this existed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from picollm.core.log import get_logger

log = get_logger()

#: --compile_loss auto compiles when batch x block x vocabulary reaches this (8 MiB of fp32 logits). Below it
#: the saving per step (1.1-2.4x of a few ms at 1M) takes thousands of steps to repay the build; at nanoGPT's
#: character shape (12 x 64 x 65 = 50k) the compiled call is slower. PTB's recipes: 32 x 35 x 10k = 11.2M.
COMPILE_MIN_LOGITS = 1 << 21


def rows_cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of logits (B, T, V) against y (B, T), in fp32."""
    # (B*T, V) rows: the softmax runs over contiguous memory; a (B, V, T) view of the logits costs 1.7-2.7x as
    # much at a 10k vocabulary (bench/loss_layout.py)
    return F.cross_entropy(logits.float().flatten(0, 1), y.flatten())


def wants_compiled_loss(setting: str, device: torch.device, logits_per_batch: int) -> bool:
    """--compile_loss made concrete: on, off, or (auto) on a CPU for logits of COMPILE_MIN_LOGITS or more."""
    if setting == "auto":
        return device.type == "cpu" and logits_per_batch >= COMPILE_MIN_LOGITS
    return setting == "on"


class TrainingLoss:
    """rows_cross_entropy, through torch.compile when `compiled`. A build that fails (no working C++
    compiler, say) warns once and leaves the loss eager for the rest of the session; `compiled` then says
    False, so the checkpoint records what the run trained with."""

    def __init__(self, compiled: bool) -> None:
        self.compiled = compiled
        self._compiled_fn = torch.compile(rows_cross_entropy) if compiled else None

    def __call__(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self._compiled_fn is None:
            return rows_cross_entropy(logits, y)
        try:
            return self._compiled_fn(logits, y)
        except torch._dynamo.exc.TorchDynamoException as e:  # the kernels are built on the first call
            log.warning(f"--compile_loss: torch.compile failed ({type(e).__name__}: {str(e).splitlines()[0]}); "
                        "training with the eager loss (--compile_loss off skips compiling)")
            self.compiled, self._compiled_fn = False, None
            return rows_cross_entropy(logits, y)
