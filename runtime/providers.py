"""Which ONNX Runtime execution providers to ask for, and which a session really got.

ONNX Runtime asked for CUDA without working CUDA libraries logs an error and quietly
runs on CPU, while get_available_providers() still lists CUDA: only
session.get_providers() tells the truth, so that is what gets reported and checked.
"""

from __future__ import annotations

import ctypes
import functools
import logging
from collections.abc import Sequence

from fusionedge.runtime.machine import cuda_driver_library

log = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
ALIASES = {
    "cuda": CUDA,
    "cpu": CPU,
    "tensorrt": "TensorrtExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "directml": "DmlExecutionProvider",
}


class ProviderError(RuntimeError):
    """A requested execution provider is not active (strict mode)."""


def requested_providers(providers: str | Sequence[str]) -> list[str]:
    """ "auto" -> CUDA (when this onnxruntime build has it and the NVIDIA driver's
    library loads) then CPU; names pass through.

    Without a driver CUDA cannot start, and asking for it anyway makes ONNX Runtime log
    an error on every session of a machine that simply has no GPU.

    Short names ("cuda", "cpu") are accepted for the full provider names.

    Raises:
        ValueError: an unknown provider name (the message lists this build's providers).
    """
    import onnxruntime as ort

    available = ort.get_available_providers()
    if providers == "auto":
        return [CUDA, CPU] if CUDA in available and nvidia_driver_loads() else [CPU]
    names = [providers] if isinstance(providers, str) else list(providers)
    if not names:
        raise ValueError("providers must be 'auto' or a non-empty list of provider names")
    resolved = [ALIASES.get(n.lower(), n) if isinstance(n, str) else n for n in names]
    for name in resolved:
        if name not in ort.get_all_providers():
            raise ValueError(
                f"unknown execution provider {name!r}; this onnxruntime "
                f"({ort.__version__}) offers {available}"
            )
    return resolved


def check_active(requested: list[str], active: list[str], strict: bool) -> list[str]:
    """Logs (or, when strict, raises on) requested providers the session did not get."""
    missing = [p for p in requested if p not in active]
    if missing:
        message = (
            f"execution provider(s) {missing} requested but not active; the session "
            f"runs on {active} (for CUDA: an NVIDIA GPU, its driver, and the CUDA and "
            "cuDNN libraries that onnxruntime-gpu needs)"
        )
        if strict:
            raise ProviderError(message)
        log.warning(message)
    return missing


@functools.cache
def nvidia_driver_loads() -> bool:
    """Whether the NVIDIA driver's CUDA library (libcuda.so.1, nvcuda.dll) loads here."""
    try:
        ctypes.CDLL(cuda_driver_library())
    except OSError:
        return False
    return True
