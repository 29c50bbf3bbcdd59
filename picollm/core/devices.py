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


def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AVX512-BF16 or AMX). torch's own probes are private
    (torch.cpu._is_*), but there is no public one, and without these units bf16 is emulated: slower than fp32."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)


#: below this many parameters a CPU's bf16 autocast costs more than it saves (it casts every weight every step):
#: models of 15k-30k parameters took 1.5x fp32's time a step, those of 0.44M and more 1.1-1.8x less
#: (bench/precision_speed.py)
BF16_MIN_PARAMS = 250_000


def resolve_precision(precision: str, device: torch.device, num_params: int | None = None) -> str:
    """--precision made concrete: auto is bf16 on CUDA, and on CPUs with bf16 units for models of at least
    BF16_MIN_PARAMS parameters (num_params None: any size); fp32 elsewhere."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16"
    large = num_params is None or num_params >= BF16_MIN_PARAMS
    return "bf16" if device.type == "cpu" and cpu_has_bf16() and large else "fp32"


def legacy_precision(device: torch.device) -> str:
    """The precision every run trained at before --precision existed: bf16 autocast on CUDA only."""
    return "bf16" if device.type == "cuda" else "fp32"


def autocast_context(device: torch.device, precision: str | None = None) -> AbstractContextManager:
    """bf16 autocast (matmuls in bf16, losses in fp32) or plain fp32. precision None: the analysis's
    default, legacy_precision(device), so test metrics are computed as before --precision existed."""
    if (precision or legacy_precision(device)) == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return nullcontext()


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
