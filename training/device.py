"""Device choice and mixed precision for training."""

from __future__ import annotations

import contextlib
import logging

import torch

log = logging.getLogger(__name__)


def resolve_device(requested: str) -> torch.device:
    """ "auto" -> CUDA when torch sees a GPU, else CPU; explicit names are checked.

    Raises:
        ValueError: the device name is malformed, or CUDA is asked for but not available.
    """
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except RuntimeError as e:
        raise ValueError(
            f"device: {requested!r} is not a device; accepted: auto, cpu, cuda, cuda:N"
        ) from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device: {requested!r} was asked for but torch sees no CUDA GPU "
            f"(torch {torch.__version__}); use device=auto or cpu"
        )
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device: {requested!r} is not supported; accepted: auto, cpu, cuda")
    return device


def amp_dtype(device: torch.device) -> torch.dtype:
    # bf16 keeps fp32's exponent range, so no loss scaling is needed where it exists.
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast_context(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """Mixed precision on CUDA only: CPU autocast is slower than fp32 for these models."""
    if device.type != "cuda" or not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda", dtype=amp_dtype(device))


def make_scaler(device: torch.device, enabled: bool) -> torch.amp.GradScaler:
    """Loss scaling for fp16 autocast; a pass-through otherwise."""
    use = device.type == "cuda" and enabled and amp_dtype(device) == torch.float16
    return torch.amp.GradScaler("cuda", enabled=use)
