"""Device choice and mixed precision for training."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

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


@contextlib.contextmanager
def torch_globals(threads: int, seed: int, device: torch.device) -> Iterator[None]:
    """torch's thread count and seeded RNG for one run, put back as they were after it.

    A run draws its initial weights, dropout and SpecAugment masks from torch's global
    RNG (each checkpoint saves that state, so a resumed run draws the same); forking it
    leaves the caller's own random stream where it was. threads=0 keeps torch's setting.
    """
    before = torch.get_num_threads()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        try:
            if threads:
                torch.set_num_threads(threads)
            torch.manual_seed(seed)
            yield
        finally:
            torch.set_num_threads(before)
