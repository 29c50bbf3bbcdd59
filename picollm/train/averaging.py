"""--ema: an exponential moving average of the weights, the model that evaluations, best.pt and analysis use.

The average over the last ~1 / (1 - decay) steps smooths out the noise of the last updates (Polyak averaging,
the idea behind AWD-LSTM's averaged SGD). torch.optim.swa_utils keeps the copy and updates it with one fused lerp
per step. Training never reads the average, so a run trains exactly as it would without it; metrics.csv's
val_loss_raw is the trained weights' own loss beside it.
"""

from __future__ import annotations

from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from picollm.models.base import LanguageModel


def make_average(model: LanguageModel, decay: float) -> AveragedModel | None:
    """The moving average of model's weights at this decay per step (a copy that starts as the model itself), or
    None when decay is 0 (off). Buffers are not averaged: they follow the model's."""
    if not decay:
        return None
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=False)
