"""`fusionedge doctor` end to end: the installed command, its JSON and its lines, held
against this machine; and, where NVIDIA's pip libraries are installed, what it says
with the libraries but no device."""

from __future__ import annotations

import ctypes
import json
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest

from fusionedge.runtime.doctor import MISSING, NOT_APPLICABLE, OK, STATUSES

# Runs the CLI in a fresh interpreter and tells whether that process itself imported torch
# (the torch probe must run in a child of it).
SCRIPT = """
import sys
from fusionedge.cli import main
code = main(sys.argv[1:])
print("TORCH_IN_PROCESS", "torch" in sys.modules, file=sys.stderr)
sys.exit(code)
"""
ORDER = ["machine", "onnxruntime", "nvidia driver", "gpus", "cuda runtime", "cublas", "cudnn"]
TAIL = ["torch", "torch cuda", "portaudio", "microphones", "cameras"]


def doctor(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, "doctor", "--max-cameras", "2", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def report() -> dict:
    done = doctor("--json")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "TORCH_IN_PROCESS False" in done.stderr
    return json.loads(done.stdout)


def by_name(report: dict) -> dict[str, dict]:
    return {c["name"]: c for c in report["checks"]}


def nvidia_gpu_on_pci() -> bool:
    """An NVIDIA display controller on the PCI bus, read from sysfs here."""
    return any(
        (d / "vendor").read_text().strip() == "0x10de"
        and (d / "class").read_text().startswith("0x03")
        for d in Path("/sys/bus/pci/devices").glob("*")
    )


def libcuda_loads() -> bool:
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    return True


def test_json_report_has_every_check_in_order(report: dict) -> None:
    names = [c["name"] for c in report["checks"]]
    providers = [n for n in names if n.startswith("provider ")]
    assert names == [*ORDER, *providers, *TAIL]
    assert "provider cpu" in providers and "provider cuda" in providers
    for check in report["checks"]:
        assert check["status"] in STATUSES, check
        assert check["detail"], check
        if check["status"] == MISSING:
            assert check["fix"], f"{check['name']} is missing and has no fix"
    assert report["summary"] == {
        s: sum(c["status"] == s for c in report["checks"]) for s in STATUSES
    }


def test_this_machine_cpu_only(report: dict) -> None:
    """No driver here: without an NVIDIA GPU on the PCI bus the driver is not applicable
    (with one, missing with its fix); CUDA falls back and says why, the CPU provider
    starts, torch is a CPU build."""
    if libcuda_loads():
        pytest.skip("this machine has an NVIDIA driver")
    checks = by_name(report)
    driver, cuda = checks["nvidia driver"], checks["provider cuda"]
    if nvidia_gpu_on_pci() or Path("/dev/dxg").exists():  # /dev/dxg: WSL2's GPU
        assert driver["status"] == MISSING and driver["fix"]
    else:
        assert driver["status"] == NOT_APPLICABLE and driver["fix"] is None
        assert "no NVIDIA GPU" in driver["detail"] and "runs on the CPU" in driver["detail"]
    assert cuda["status"] in (MISSING, NOT_APPLICABLE)
    if cuda["data"].get("requested"):  # the provider was tried (a CUDA build)
        assert cuda["data"]["active"] == ["CPUExecutionProvider"]
        assert "Failed to load library" in cuda["detail"]
    if cuda["status"] == MISSING:
        assert cuda["fix"] == driver["fix"]  # the first thing missing
    assert checks["provider cpu"]["status"] == OK
    assert checks["torch cuda"]["status"] in (NOT_APPLICABLE, MISSING)
    try:
        torch_version = version("torch")
    except PackageNotFoundError:
        assert checks["torch"]["status"] == MISSING
        return
    assert checks["torch"]["status"] == OK and torch_version in checks["torch"]["detail"]
    assert checks["torch cuda"]["data"]["cuda_available"] is False
    assert "torch.cuda.is_available() is False" in checks["torch cuda"]["detail"]


def test_lines_are_one_per_check_with_the_fix(report: dict) -> None:
    done = doctor()
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    body = lines[1:-1]
    assert lines[0].startswith("fusionedge ")
    assert len(body) == len(report["checks"])
    for line, check in zip(body, report["checks"], strict=True):
        assert line.startswith(check["status"]), line
        assert f"{check['name']}: " in line
        assert ("-> fix: " in line) == (check["status"] != OK and bool(check["fix"])), line
    import sounddevice as sd

    portaudio = next(x for x in body if " portaudio: " in x)
    assert portaudio.startswith(OK) and sd.get_portaudio_version()[1] in portaudio
    summary = report["summary"]
    assert lines[-1] == f"{summary[OK]} ok, {summary[MISSING]} missing, " + (
        f"{summary[NOT_APPLICABLE]} not applicable"
    )


def nvidia_wheel_libraries() -> list[Path]:
    """The CUDA 13 and cuDNN 9 libraries of NVIDIA's pip wheels in this environment."""
    names = [("cu13", "libcudart.so.13"), ("cu13", "libcublasLt.so.13"), ("cudnn", "libcudnn.so.9")]
    return [
        Path(d, "nvidia", folder, "lib", name)
        for d in sys.path
        for folder, name in names
        if d and Path(d, "nvidia", folder, "lib", name).is_file()
    ]


def test_libraries_without_a_device(report: dict) -> None:
    """With `onnxruntime-gpu[cuda,cudnn]` installed (skipped without: install them in a
    separate environment, docs/GPU.md): the library lines are ok and name the wheels'
    files, and the CUDA line then fails on the driver, not on a library."""
    found = nvidia_wheel_libraries()
    if len(found) < 3:
        pytest.skip("NVIDIA's CUDA 13 and cuDNN 9 pip libraries are not installed here")
    checks = by_name(report)
    for group in ("cuda runtime", "cublas", "cudnn"):
        assert checks[group]["status"] == OK, checks[group]
    for path in found:
        assert f"loaded from {path}" in json.dumps(report), path
    if not libcuda_loads():
        # Past the libraries: ONNX Runtime now stops at the driver's own library.
        cuda, driver = checks["provider cuda"], checks["nvidia driver"]
        assert "with error: libcuda.so.1" in cuda["detail"]
        if driver["status"] == NOT_APPLICABLE:  # no GPU: the driver would serve nothing
            assert cuda["status"] == NOT_APPLICABLE and cuda["fix"] is None
        else:
            assert cuda["status"] == MISSING and cuda["fix"] == driver["fix"]
