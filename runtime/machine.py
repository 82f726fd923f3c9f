"""The machine fusionedge runs on: which case of docs/GPU.md it is (x86_64 Linux, a Jetson,
a Raspberry Pi, ...), the NVIDIA GPUs on its PCI bus, and what its NVIDIA driver says.

Facts only, read from /sys, /proc, /etc and the driver's own library; `fusionedge doctor`
(runtime/doctor.py) turns them into checks and fixes.
"""

from __future__ import annotations

import ctypes
import platform
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Machine:
    """Which of the cases of docs/GPU.md this machine is."""

    case: str  # x86_64-linux, jetson, raspberry-pi, aarch64-linux, macos, windows, other
    system: str
    arch: str
    board: str | None
    os_release: dict[str, str]
    nvidia_pci: list[str]  # NVIDIA display controllers on the PCI bus (Linux)


def read_text(path: str) -> str | None:
    try:
        return Path(path).read_text(errors="replace").replace("\0", "").strip()
    except OSError:
        return None


def os_release() -> dict[str, str]:
    text = read_text("/etc/os-release") or ""
    pairs = (line.split("=", 1) for line in text.splitlines() if "=" in line)
    return {k: v.strip().strip('"') for k, v in pairs}


def nvidia_pci_devices() -> list[str]:
    """PCI addresses of NVIDIA (vendor 0x10de) display controllers (class 0x03xxxx): the
    GPUs a driver could serve, seen whether or not a driver is loaded."""
    found = []
    for device in sorted(Path("/sys/bus/pci/devices").glob("*")):
        vendor, cls = read_text(f"{device}/vendor"), read_text(f"{device}/class")
        if vendor == "0x10de" and (cls or "").startswith("0x03"):
            found.append(device.name)
    return found


def detect_machine() -> Machine:
    system, arch = platform.system(), platform.machine().lower()
    tegra = read_text("/etc/nv_tegra_release")
    model = read_text("/proc/device-tree/model")
    board = None
    if system == "Linux" and arch in ("x86_64", "amd64"):
        case = "x86_64-linux"
    elif system == "Linux" and tegra is not None:
        case, board = "jetson", f"{model or 'Jetson'} ({tegra.splitlines()[0].lstrip('# ')})"
    elif system == "Linux" and model is not None and "raspberry pi" in model.lower():
        case, board = "raspberry-pi", model
    elif system == "Linux" and arch in ("aarch64", "arm64"):
        case, board = "aarch64-linux", model
    else:
        case = {"Darwin": "macos", "Windows": "windows"}.get(system, "other")
    pci = nvidia_pci_devices() if system == "Linux" else []
    return Machine(case, system, arch, board, os_release(), pci)


def l4t_release(machine: Machine) -> str | None:
    """The L4T major release of a Jetson ("36" is JetPack 6), from /etc/nv_tegra_release."""
    match = re.search(r"R(\d+)", machine.board or "")
    return match.group(1) if match else None


def cuda_driver_library() -> str:
    """The file name of the NVIDIA driver's CUDA library on this platform."""
    return {"Windows": "nvcuda.dll", "Darwin": "libcuda.dylib"}.get(
        platform.system(), "libcuda.so.1"
    )


def cuda_driver() -> dict[str, Any]:
    """What libcuda.so.1 (the driver's CUDA library) says: loadable, the CUDA version it
    supports, and the GPUs it sees (cuInit + cuDeviceGet*, no nvidia-smi needed)."""
    try:
        lib = ctypes.CDLL(cuda_driver_library())
    except OSError as e:
        return {"loadable": False, "error": str(e)}
    version = ctypes.c_int(0)
    lib.cuDriverGetVersion(ctypes.byref(version))
    out: dict[str, Any] = {"loadable": True, "cuda_version": version.value, "gpus": []}
    status = lib.cuInit(0)
    if status != 0:  # 100: CUDA_ERROR_NO_DEVICE; others: driver and kernel module disagree
        out["init_error"] = status
        return out
    count = ctypes.c_int(0)
    lib.cuDeviceGetCount(ctypes.byref(count))
    for index in range(count.value):
        buffer = ctypes.create_string_buffer(256)
        device = ctypes.c_int(0)
        lib.cuDeviceGet(ctypes.byref(device), index)
        lib.cuDeviceGetName(buffer, 256, device)
        out["gpus"].append(buffer.value.decode(errors="replace"))
    return out


def nvidia_smi() -> list[str] | None:
    """nvidia-smi's one line per GPU (name, driver, memory); None where it is not installed."""
    if shutil.which("nvidia-smi") is None:
        return None
    query = ["--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"]
    try:
        done = subprocess.run(
            ["nvidia-smi", *query], capture_output=True, text=True, timeout=20, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return [f"nvidia-smi failed: {e}"]
    return (done.stdout.strip() or done.stderr.strip() or "no output").splitlines()


def driver_state() -> dict[str, Any]:
    proc = read_text("/proc/driver/nvidia/version")
    return {
        "proc_version": proc.splitlines()[0] if proc else None,
        "nvidia_smi": nvidia_smi(),
        "libcuda": cuda_driver(),
    }


def no_nvidia_gpu(machine: Machine) -> bool:
    """Whether this machine surely has no NVIDIA GPU for a driver to serve: macOS, or a
    Linux machine with none on the PCI bus. A Jetson's GPU is part of its SoC and WSL2
    hands a GPU over through /dev/dxg, neither on PCI; Windows' bus is not read here."""
    if machine.case == "macos":
        return True
    return (
        machine.system == "Linux"
        and machine.case != "jetson"
        and not machine.nvidia_pci
        and not Path("/dev/dxg").exists()
    )
