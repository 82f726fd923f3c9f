"""`fusionedge doctor`, the checks that need no torch: what this machine can run and why not.

Each check gives one status word (ok, missing, not applicable), what was seen, and for a
missing thing the one command that fixes it. The execution providers are tried for
real (provider_probe.py): ONNX Runtime lists CUDA in get_available_providers() wherever
onnxruntime-gpu is installed, and only a session tells whether it starts.

The CUDA libraries are preloaded (cuda_libs.preload, the one a CUDA session of
open_session runs) before the providers are tried, so the library lines and the
providers see what a fusionedge process would. The torch checks live in the command line
(fusionedge.cli.doctor): the runtime never imports torch.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import platform
from dataclasses import asdict, dataclass, field
from typing import Any

from fusionedge.runtime import cuda_libs
from fusionedge.runtime.cuda_libs import group_of, ort_cuda_major, required
from fusionedge.runtime.machine import (
    Machine,
    detect_machine,
    driver_state,
    l4t_release,
    no_nvidia_gpu,
)
from fusionedge.runtime.provider_probe import try_provider
from fusionedge.runtime.providers import CPU, CUDA

OK = "ok"
MISSING = "missing"
NOT_APPLICABLE = "not applicable"
STATUSES = (OK, MISSING, NOT_APPLICABLE)

PORTAUDIO_FIX = {"Linux": "sudo apt-get install libportaudio2", "Darwin": "brew install portaudio"}
# The lowest driver branch of each CUDA major (NVIDIA's CUDA Toolkit release notes).
MIN_DRIVER = {12: "525", 13: "580"}
JETSON_INDEX = {"36": "https://pypi.jetson-ai-lab.io/jp6/cu126"}
JETSON_WHEELS = "https://pypi.jetson-ai-lab.io (NVIDIA's Jetson AI Lab index)"


@dataclass
class Check:
    """One line of the report."""

    name: str
    status: str
    detail: str
    fix: str | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ------------------------------------------------------------------------- the machine


CASE_TEXT = {
    "x86_64-linux": "PyPI's onnxruntime-gpu runs CUDA here once the NVIDIA driver and "
    "NVIDIA's CUDA and cuDNN pip libraries are present, and the CPU otherwise",
    "jetson": "PyPI has no onnxruntime-gpu for aarch64: pip installs the CPU onnxruntime; "
    f"CUDA needs NVIDIA's Jetson build of onnxruntime-gpu from {JETSON_WHEELS}",
    "raspberry-pi": "no CUDA GPU: the CPU onnxruntime from PyPI runs everything",
    "aarch64-linux": "PyPI has no onnxruntime-gpu for aarch64: the CPU onnxruntime runs",
    "macos": "no CUDA on macOS: the CPU onnxruntime runs (CoreML where its build has it)",
    "windows": "PyPI's onnxruntime-gpu runs CUDA here with the driver and NVIDIA's libraries",
    "other": "no onnxruntime wheel may exist for this platform on PyPI",
}


def check_machine(machine: Machine) -> Check:
    name = machine.os_release.get("PRETTY_NAME", f"{machine.system} {platform.release()}")
    where = machine.board or name
    detail = (
        f"{machine.case} ({machine.arch}, {where}, Python {platform.python_version()}): "
        + CASE_TEXT[machine.case]
    )
    data = {"case": machine.case, "arch": machine.arch, "board": machine.board, "os": name}
    if machine.arch in ("armv7l", "armv6l", "i686", "i386"):
        fix = "install a 64-bit OS (e.g. 64-bit Raspberry Pi OS)"
        return Check("machine", MISSING, detail + "; PyPI has no onnxruntime for 32-bit", fix)
    return Check("machine", OK, detail, data=data)


# ---------------------------------------------------------------------- onnxruntime


def onnxruntime_packages() -> dict[str, str]:
    """Installed distributions that provide the onnxruntime module, name -> version."""
    from importlib.metadata import distributions

    names = {}
    for dist in distributions():
        name = (dist.metadata["Name"] or "").lower()
        ours = name == "onnxruntime" or name.startswith("onnxruntime-")
        # onnxruntime-genai and the like share the prefix, not the onnxruntime/ folder.
        if ours and any(f.parts[0] == "onnxruntime" for f in dist.files or []):
            names[name] = dist.version
    return names


def check_onnxruntime(machine: Machine) -> Check:
    import onnxruntime as ort

    packages = onnxruntime_packages()
    major = ort_cuda_major()
    built = f"built for CUDA {ort.cuda_version}" if major else "built without CUDA"
    detail = (
        f"{', '.join(f'{n} {v}' for n, v in packages.items()) or 'onnxruntime'} "
        f"({built}; providers in this build: {', '.join(ort.get_available_providers())})"
    )
    data = {"version": ort.__version__, "packages": packages, "cuda_version": major}
    if len(packages) > 1:
        # Both write the same onnxruntime/ folder: whichever was installed last is what
        # imports, and uninstalling either breaks the other.
        right = "onnxruntime-gpu" if machine.case in ("x86_64-linux", "windows") else "onnxruntime"
        fix = f"pip uninstall -y {' '.join(packages)} && pip install {right}"
        return Check("onnxruntime", MISSING, detail + "; several packages share one folder", fix)
    return Check("onnxruntime", OK, detail, data=data)


# ---------------------------------------------------------------------- NVIDIA driver


def driver_fix(machine: Machine) -> str:
    """The one command that installs an NVIDIA driver new enough for this onnxruntime."""
    major = ort_cuda_major() or 13
    if machine.case == "jetson":
        return "sudo apt-get install nvidia-jetpack"
    distro = {machine.os_release.get("ID", "")} | set(machine.os_release.get("ID_LIKE", "").split())
    if "ubuntu" in distro:
        return "sudo ubuntu-drivers install"
    if "debian" in distro:
        return (
            f"sudo apt-get install cuda-drivers (driver {MIN_DRIVER.get(major, '')} or newer, "
            "from NVIDIA's CUDA apt repository: https://developer.nvidia.com/cuda-downloads)"
        )
    return f"install NVIDIA's driver {MIN_DRIVER.get(major, '')} or newer: https://www.nvidia.com/drivers"


def driver_absent(machine: Machine, state: dict[str, Any]) -> Check:
    """The driver line where libcuda.so.1 does not load: missing where a GPU could use
    it, not applicable where there is none (a driver would serve nothing)."""
    seen = [
        "no /proc/driver/nvidia/version" if state["proc_version"] is None else "",
        "no nvidia-smi" if state["nvidia_smi"] is None else "",
        f"libcuda.so.1 not loadable ({state['libcuda']['error']})",
    ]
    detail = "; ".join(s for s in seen if s)
    if no_nvidia_gpu(machine):
        where = "none on the PCI bus" if machine.system == "Linux" else machine.case
        detail = f"no NVIDIA GPU ({where}): everything runs on the CPU; {detail}"
        return Check("nvidia driver", NOT_APPLICABLE, detail, data=state)
    if machine.nvidia_pci:
        detail += f"; NVIDIA GPU(s) on the PCI bus at {', '.join(machine.nvidia_pci)}"
    return Check("nvidia driver", MISSING, detail, driver_fix(machine), data=state)


def check_driver(machine: Machine, state: dict[str, Any]) -> Check:
    libcuda = state["libcuda"]
    if not libcuda["loadable"]:
        return driver_absent(machine, state)
    cuda = libcuda["cuda_version"]
    supports = f"supports CUDA up to {cuda // 1000}.{cuda % 1000 // 10}"
    detail = f"{state['proc_version'] or 'libcuda.so.1 loads'}; {supports}"
    needed = ort_cuda_major()
    if needed and cuda // 1000 < needed:
        detail += f", but this onnxruntime needs CUDA {needed} (driver {MIN_DRIVER.get(needed)}+)"
        return Check("nvidia driver", MISSING, detail, driver_fix(machine), data=state)
    return Check("nvidia driver", OK, detail, data=state)


def check_gpus(machine: Machine, state: dict[str, Any]) -> Check:
    libcuda = state["libcuda"]
    gpus = libcuda.get("gpus", [])
    if gpus:
        shown = state["nvidia_smi"] or gpus
        return Check("gpus", OK, f"{len(gpus)}: {'; '.join(shown)}", data={"gpus": gpus})
    if not libcuda["loadable"]:
        if no_nvidia_gpu(machine):
            detail = "no driver to ask; no NVIDIA GPU here: everything runs on the CPU"
            return Check("gpus", NOT_APPLICABLE, detail)
        detail = "no driver to ask" + (
            f" (the PCI bus has {len(machine.nvidia_pci)} NVIDIA GPU(s))"
            if machine.nvidia_pci
            else ""
        )
        return Check("gpus", MISSING, detail, driver_fix(machine))
    detail = f"the driver sees none (cuInit error {libcuda.get('init_error')})"
    # A driver without devices is most often a container started without them.
    fix = "start the container with the GPU: docker run --gpus all ..."
    return Check("gpus", MISSING, detail, fix)


# ---------------------------------------------------------------------- CUDA libraries


def cuda_fix(machine: Machine) -> str:
    """The one command that installs the CUDA and cuDNN libraries this onnxruntime needs."""
    import onnxruntime as ort

    if machine.case == "jetson":
        return "sudo apt-get install nvidia-jetpack"
    if "cuda" in fusionedge_extras():
        return 'pip install "fusionedge[cuda]"'
    return f'pip install "onnxruntime-gpu[cuda,cudnn]=={ort.__version__}"'


def fusionedge_extras() -> list[str]:
    from importlib.metadata import PackageNotFoundError, metadata

    try:
        return metadata("fusionedge").get_all("Provides-Extra") or []
    except PackageNotFoundError:
        return []


def describe_library(relative: tuple[str, ...], system: dict[str, str], loaded: dict) -> str:
    name = relative[-1]
    path = cuda_libs.mapped_path(name, loaded)
    if path is not None:
        return f"{name} loaded from {path}"
    where = cuda_libs.locate(relative, system)
    if where is not None:
        return f"{name} at {where[0]} ({where[1]}, not loaded)"
    # Another major version of it answers "installed, but for another CUDA".
    other = ctypes.util.find_library(name.split(".so")[0].removeprefix("lib"))
    return f"{name} not found" + (f" (only {other})" if other else "")


def check_library_group(
    group: str, relatives: list[tuple[str, ...]], loaded: dict[str, str], fix: str
) -> Check:
    system = cuda_libs.ldconfig_libraries()
    lines = [describe_library(r, system, loaded) for r in relatives]
    absent = [
        r[-1]
        for r, line in zip(relatives, lines, strict=True)
        if " not found" in line and required(r[-1])
    ]
    data = {"libraries": dict(zip((r[-1] for r in relatives), lines, strict=True))}
    if absent:
        return Check(group, MISSING, "; ".join(lines), fix, data)
    return Check(group, OK, "; ".join(lines), data=data)


def preload_quietly() -> dict[str, Any]:
    """cuda_libs.preload() without its WARNING lines: the library lines below tell the
    same, with the fix, and a warning on stderr would only repeat them out of order."""
    logger = logging.getLogger(cuda_libs.__name__)
    disabled, logger.disabled = logger.disabled, True
    try:
        return cuda_libs.preload()
    finally:
        logger.disabled = disabled


def check_cuda_libraries(machine: Machine, preload: dict[str, Any] | None) -> list[Check]:
    groups = ("cuda runtime", "cublas", "cudnn")
    major = ort_cuda_major()
    if major is None or machine.system != "Linux":
        why = "this onnxruntime has no CUDA provider" if major is None else "checked on Linux only"
        return [Check(g, NOT_APPLICABLE, why) for g in groups]
    relatives = cuda_libs.cuda_library_paths(major)
    loaded = cuda_libs.loaded_libraries()  # after the preload: what a CUDA session finds
    fix = cuda_fix(machine)
    checks = [
        check_library_group(g, [r for r in relatives if group_of(r[-1]) == g], loaded, fix)
        for g in groups
    ]
    if preload is not None:
        checks[0].data["preload_dlls"] = preload
    return checks


# ---------------------------------------------------------------- execution providers


def short_name(provider: str) -> str:
    from fusionedge.runtime.providers import ALIASES

    return {v: k for k, v in ALIASES.items()}.get(provider, provider)


def first_missing(reason: str, checks: dict[str, Check]) -> str | None:
    """The first thing CUDA needs that is missing, in the order it needs them: the
    driver, the libraries, a GPU. ONNX Runtime names only the first library it missed."""
    if "libcuda.so" in reason or checks["nvidia driver"].status == MISSING:
        return "nvidia driver"
    order = ("cuda runtime", "cublas", "cudnn", "gpus")
    return next((name for name in order if checks[name].status != OK), None)


def cuda_fallback(
    detail: str, reason: str, result: dict[str, Any], checks: dict[str, Check]
) -> Check:
    """The CUDA line when the session fell back to the CPU: not applicable without a GPU,
    else missing, with the fix of the first thing CUDA needs."""
    name = "provider cuda"
    if checks["nvidia driver"].status == NOT_APPLICABLE:
        return Check(name, NOT_APPLICABLE, f"{detail}; no NVIDIA GPU here", data=result)
    first = first_missing(reason, checks)
    if first is None:
        return Check(name, MISSING, detail, None, result)
    detail += f"; first missing: {first}"
    return Check(name, MISSING, detail, checks[first].fix, result)


def check_provider(provider: str, checks: dict[str, Check]) -> Check:
    name = f"provider {short_name(provider)}"
    result = try_provider(provider)
    if result["started"]:
        detail = f"starts ({', '.join(result['active'])}; 1 + 1 ran)"
        return Check(name, OK, detail, data=result)
    messages = [m.rstrip(".") for m in result["messages"]]
    reason = " / ".join(messages) or result["error"] or "no message from ONNX Runtime"
    detail = f"asked for {result['requested']}, the session got {result['active']}: {reason}"
    if provider == CUDA:
        return cuda_fallback(detail, reason, result, checks)
    if checks.get("provider cuda", Check("", OK, "")).status != OK:
        # TensorRT and the like run on top of CUDA: no use telling their own gaps first.
        return Check(name, NOT_APPLICABLE, "needs the CUDA provider first; " + detail, data=result)
    docs = "https://onnxruntime.ai/docs/execution-providers/"
    return Check(name, MISSING, detail, f"optional, fusionedge uses CUDA; see {docs}", result)


def no_cuda_build(machine: Machine) -> Check:
    """The CUDA line where this onnxruntime was built without CUDA."""
    name, have = "provider cuda", "this onnxruntime has no CUDA provider"
    if machine.case in ("x86_64-linux", "windows"):
        fix = f"pip uninstall -y onnxruntime && {cuda_fix(machine)}"
        return Check(name, MISSING, f"{have} (the CPU package is installed)", fix)
    if machine.case == "jetson":
        index = JETSON_INDEX.get(l4t_release(machine) or "")
        fix = (
            f"pip uninstall -y onnxruntime && pip install onnxruntime-gpu --index-url {index}"
            if index
            else f"install NVIDIA's onnxruntime-gpu for this JetPack from {JETSON_WHEELS}"
        )
        return Check(name, MISSING, f"{have}: PyPI has none for aarch64", fix)
    if machine.nvidia_pci:
        fix = "build onnxruntime-gpu: https://onnxruntime.ai/docs/build/eps.html#cuda"
        return Check(name, MISSING, f"{have}, and PyPI has no build for {machine.arch}", fix)
    return Check(name, NOT_APPLICABLE, f"{have}; no NVIDIA GPU here ({machine.case})")


def check_providers(machine: Machine, checks: dict[str, Check]) -> list[Check]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    out = [] if CUDA in available else [no_cuda_build(machine)]
    # CUDA first: the providers built on it are judged by its line.
    order = sorted(available, key=lambda p: (p != CUDA, p == CPU))
    for provider in order:
        check = check_provider(provider, checks)
        checks[check.name] = check
        out.append(check)
    return out


# ------------------------------------------------------------- audio and cameras


def check_portaudio() -> tuple[Check, Any]:
    """The PortAudio check and the sounddevice module (None when it cannot load)."""
    from fusionedge.runtime.audio_sources import import_sounddevice

    try:
        sd = import_sounddevice()
    except ImportError as e:
        fix = PORTAUDIO_FIX.get(platform.system(), "install PortAudio")
        return Check("portaudio", MISSING, str(e), fix), None
    library = getattr(sd, "_libname", "the bundled library")
    return Check("portaudio", OK, f"{sd.get_portaudio_version()[1]} ({library})"), sd


def check_microphones(sd: Any) -> Check:
    from fusionedge.runtime.devices import list_audio_inputs

    if sd is None:
        return Check("microphones", NOT_APPLICABLE, "needs PortAudio (see above)")
    inputs = list_audio_inputs()
    if not inputs:
        apis = ", ".join(api["name"] for api in sd.query_hostapis()) or "none"
        detail = f"PortAudio lists no input device (host APIs: {apis})"
        fix = "connect a microphone (`fusionedge run --mic FILE` plays an audio file instead)"
        return Check("microphones", MISSING, detail, fix, {"inputs": []})
    shown = "; ".join(
        f"{a['index']}: {a['name']}{' (default)' if a['default'] else ''}, accepts {a['rates']}"
        for a in inputs
    )
    return Check("microphones", OK, f"{len(inputs)}: {shown}", data={"inputs": inputs})


def check_cameras(max_index: int) -> Check:
    from fusionedge.runtime.devices import list_cameras

    cameras = list_cameras(max_index)
    if not cameras:
        detail = f"none opened and delivered a frame (indices 0-{max_index - 1})"
        fix = "connect a camera (`fusionedge run --camera` also takes a video file or URL)"
        return Check("cameras", MISSING, detail, fix, {"cameras": []})
    shown = "; ".join(f"{c['index']}: {c['width']}x{c['height']} ({c['backend']})" for c in cameras)
    return Check("cameras", OK, f"{len(cameras)}: {shown}", data={"cameras": cameras})


# ----------------------------------------------------------------------- the report


def gpu_checks() -> list[Check]:
    """The machine, onnxruntime, driver, GPUs, CUDA libraries and providers, in order:
    the CUDA libraries are preloaded before the providers are tried."""
    machine = detect_machine()
    state = driver_state()
    checks = [
        check_machine(machine),
        check_onnxruntime(machine),
        check_driver(machine, state),
        check_gpus(machine, state),
    ]
    preload = preload_quietly() if ort_cuda_major() and machine.system == "Linux" else None
    checks += check_cuda_libraries(machine, preload)
    checks += check_providers(machine, {c.name: c for c in checks})
    return checks


def device_checks(max_cameras: int = 8) -> list[Check]:
    """PortAudio, the microphones it lists and the cameras that deliver a frame."""
    portaudio, sd = check_portaudio()
    return [portaudio, check_microphones(sd), check_cameras(max_cameras)]
