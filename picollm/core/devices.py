"""Devices, precision and seeding: what every module that runs a model needs."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch

from picollm.core.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """torch.device for --device, with a one-line error when it is not available."""
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {name} asked for, but CUDA is not available here; use --device cpu")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("--device mps asked for, but MPS is not available here; use --device cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device {name!r} is not a torch device; use cpu, cuda, cuda:N or mps") from None


def autocast_context(device: torch.device) -> AbstractContextManager:
    """bf16 autocast on CUDA (matmuls in bf16, losses in fp32); plain fp32 elsewhere."""
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return nullcontext()


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
