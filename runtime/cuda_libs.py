"""The CUDA and cuDNN shared libraries that onnxruntime-gpu's CUDA provider loads: where
they are, which this process has loaded, and preloading them once per process.

NVIDIA's pip wheels (`fusionedge[cuda]`, i.e. onnxruntime-gpu[cuda,cudnn]) put the
libraries under site-packages/nvidia/, and libonnxruntime_providers_cuda.so has no
RUNPATH there: asked for CUDA, the provider fails on libcublasLt.so.13 and the session
runs on the CPU. onnxruntime.preload_dlls() loads them by full path first, so that the
provider's own load then finds them by soname. open_session (sessions.py) calls
preload() before the first session that asks for CUDA or TensorRT; docs/GPU.md tells
the order it keeps with torch.

A failed preload is logged at WARNING and never raised: whether the session really got
CUDA stays the business of providers.check_active, which reports the fallback.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# The providers that run on the CUDA libraries.
CUDA_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")

# Library name stem -> the doctor line it is reported on.
LIB_GROUPS = {
    "libcudart": "cuda runtime",
    "libcurand": "cuda runtime",
    "libcufft": "cuda runtime",
    "libnvrtc": "cuda runtime",
    "libcublas": "cublas",  # libcublasLt too
    "libcudnn": "cudnn",
}
# Loaded only by some models (FFT, runtime-compiled kernels); preload_dlls skips them
# quietly too, so their absence stops nothing fusionedge exports.
OPTIONAL_LIBS = ("libcufft", "libnvrtc")

# Why preload() did not call preload_dlls(); the first two are no failure.
ALREADY_LOADED = "already loaded"
NO_CUDA_BUILD = "this onnxruntime has no CUDA provider"

_lock = threading.Lock()
_preloaded: dict[str, Any] | None = None  # preload()'s record, once it has run


def ort_cuda_major() -> int | None:
    """The CUDA major this onnxruntime was built with; None for a build without CUDA."""
    import onnxruntime as ort

    version = getattr(ort, "cuda_version", "") or ""
    return int(version.split(".")[0]) if version.split(".")[0].isdigit() else None


def group_of(name: str) -> str | None:
    stem = name.split(".so")[0].removesuffix("Lt")
    return LIB_GROUPS.get(stem)


def cuda_library_paths(major: int) -> list[tuple[str, ...]]:
    """The libraries this onnxruntime's CUDA provider loads, each as its path under
    site-packages in NVIDIA's wheels: onnxruntime's own table, the one preload_dlls walks
    (private, so a CUDA 12 table stands in where it is gone)."""
    import onnxruntime as ort

    table = getattr(ort, "_get_nvidia_dll_paths", None)
    if table is not None:
        with contextlib.suppress(TypeError):
            return [tuple(p) for p in table(False, True, True)]
    return [
        ("nvidia", "cuda_runtime", "lib", f"libcudart.so.{major}"),
        ("nvidia", "cublas", "lib", f"libcublas.so.{major}"),
        ("nvidia", "cublas", "lib", f"libcublasLt.so.{major}"),
        ("nvidia", "curand", "lib", "libcurand.so.10"),
        ("nvidia", "cudnn", "lib", "libcudnn.so.9"),
    ]


def required(name: str) -> bool:
    """Whether the CUDA provider cannot start without this library."""
    return not name.startswith(OPTIONAL_LIBS)


def ldconfig_libraries() -> dict[str, str]:
    """soname -> path in the loader cache (`ldconfig -p`): the system's libraries."""
    ldconfig = shutil.which("ldconfig") or "/sbin/ldconfig"
    try:
        done = subprocess.run(
            [ldconfig, "-p"], capture_output=True, text=True, timeout=20, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return {}
    found: dict[str, str] = {}
    for line in done.stdout.splitlines():
        match = re.match(r"\s*(\S+) \(([^)]*)\) => (\S+)", line)
        if match:
            found.setdefault(match.group(1), match.group(3))
    return found


def loaded_libraries() -> dict[str, str]:
    """File name -> path of every shared library this process has mapped (Linux; empty
    elsewhere)."""
    try:
        maps = Path("/proc/self/maps").read_text(errors="replace")
    except OSError:
        return {}
    paths = {line.split()[-1] for line in maps.splitlines() if "/" in line and ".so" in line}
    return {Path(p).name: p for p in sorted(paths)}


def mapped_path(name: str, loaded: dict[str, str]) -> str | None:
    """Where the library of soname `name` is mapped from, or None. The loader maps the
    file a soname links to (libcudart.so.13 -> libcudart.so.13.0.96)."""
    return next((p for n, p in loaded.items() if n == name or n.startswith(name + ".")), None)


def locate(relative: tuple[str, ...], system: dict[str, str]) -> tuple[str, str] | None:
    """Where a library is, (path, source) by the loader's and preload_dlls' order: pip
    wheels under site-packages, then LD_LIBRARY_PATH, then the loader cache."""
    name = relative[-1]
    for folder in dict.fromkeys(sys.path):
        if folder and Path(folder, *relative).is_file():
            return str(Path(folder, *relative)), "NVIDIA pip wheel"
    for folder in os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep):
        if folder and Path(folder, name).is_file():
            return str(Path(folder, name)), "LD_LIBRARY_PATH"
    if name in system:
        return system[name], "system (ldconfig)"
    return None


def unloaded(relatives: list[tuple[str, ...]], loaded: dict[str, str]) -> list[str]:
    """The required libraries among `relatives` that are not mapped."""
    return [r[-1] for r in relatives if required(r[-1]) and not mapped_path(r[-1], loaded)]


def needs_cuda_libraries(providers: Sequence[Any]) -> bool:
    """Whether a session asked for these providers would load the CUDA libraries. An
    entry is a name or, as ONNX Runtime also takes it, a (name, options) pair."""
    names = [p[0] if isinstance(p, tuple) else p for p in providers]
    return any(name in CUDA_PROVIDERS for name in names)


# ------------------------------------------------------------------------- the preload


def preload() -> dict[str, Any]:
    """Loads the CUDA and cuDNN libraries for this onnxruntime once per process, and
    returns what happened (the same record on every later call, at the cost of one
    lookup). Logs at WARNING the required libraries that are still not loaded."""
    global _preloaded
    if _preloaded is not None:
        return _preloaded
    with _lock:  # two threads may open their first CUDA sessions at once
        if _preloaded is None:
            record = run_preload()
            warn_unloaded(record)
            _preloaded = record
    return _preloaded


def run_preload() -> dict[str, Any]:
    """preload_dlls() as ONNX Runtime recommends it, for the libraries still missing."""
    import onnxruntime as ort

    record: dict[str, Any] = dict(called=False, skipped=None, printed=[], error=None)
    record.update(loaded={}, not_loaded=[])
    major = ort_cuda_major()
    if major is None:
        return {**record, "skipped": NO_CUDA_BUILD}
    if not hasattr(ort, "preload_dlls"):  # onnxruntime < 1.21
        return {**record, "skipped": f"onnxruntime {ort.__version__} has no preload_dlls()"}
    relatives = cuda_library_paths(major)
    before = loaded_libraries()
    # Which libraries are mapped is seen in /proc/self/maps, on Linux only; elsewhere all
    # count as absent and preload_dlls() decides (on Windows it defers to torch itself).
    linux = platform.system() == "Linux"
    absent = unloaded(relatives, before) if linux else [r[-1] for r in relatives]
    if not absent:
        # Already in the process: torch with the same CUDA major imported first (ONNX
        # Runtime's docs: then no preload is needed), or another library that loaded
        # them. Loading the wheels' copies too could map a second file under one soname.
        return {**record, "skipped": ALREADY_LOADED}
    cudnn = any(group_of(n) == "cudnn" for n in absent)
    cuda = any(group_of(n) != "cudnn" for n in absent)
    record.update(call_preload_dlls(cuda=cuda, cudnn=cudnn), called=True)
    after = loaded_libraries()
    record["loaded"] = {n: p for n, p in after.items() if n not in before}
    record["not_loaded"] = unloaded(relatives, after) if linux else []
    return record


def call_preload_dlls(cuda: bool, cudnn: bool) -> dict[str, Any]:
    """onnxruntime.preload_dlls() with its default directory: on Linux the nvidia wheels
    under site-packages, then the loader's usual search; on Windows first the lib folder
    of a compatible torch, skipped when that torch is already imported. It reports a
    failure with print(): caught here, since stdout may be a `--json` report."""
    import onnxruntime as ort

    printed = io.StringIO()
    error = None
    # redirect_stdout swaps sys.stdout for the whole process: another thread's print in
    # these milliseconds lands in the log too, which loses nothing.
    with contextlib.redirect_stdout(printed):
        try:
            ort.preload_dlls(cuda=cuda, cudnn=cudnn)
        except Exception as e:
            # Whatever it raises, the session still opens (on the CPU) and check_active
            # reports that; the error goes to the log, not up through open_session.
            error = f"{type(e).__name__}: {e}"
    ansi = re.compile(r"\x1b\[[0-9;]*m")
    lines = [ansi.sub("", line).strip() for line in printed.getvalue().splitlines()]
    return {"printed": [line for line in lines if line], "error": error}


def warn_unloaded(record: dict[str, Any]) -> None:
    """The WARNING lines for a preload that left the CUDA provider without a library."""
    if record["skipped"] not in (None, ALREADY_LOADED, NO_CUDA_BUILD):
        log.warning("CUDA libraries not preloaded: %s", record["skipped"])
    if record["error"]:
        log.warning("onnxruntime.preload_dlls() failed: %s", record["error"])
    for line in record["printed"]:
        # "Skip loading ... since torch is imported" (Windows) is the intended path.
        level = logging.INFO if line.startswith("Skip loading") else logging.WARNING
        log.log(level, "onnxruntime.preload_dlls(): %s", line)
    if record.get("not_loaded"):
        log.warning(
            "CUDA libraries not loaded: %s; the CUDA provider will fall back to the CPU "
            "(`fusionedge doctor` tells what is missing and the command that installs it)",
            ", ".join(record["not_loaded"]),
        )
