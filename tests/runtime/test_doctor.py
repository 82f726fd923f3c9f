"""The checks of `fusionedge doctor` that need no torch (fusionedge.runtime.doctor), each
held against what this machine has, found here by other means (ctypes, ldconfig, the
files on disk, PortAudio). The board cases (Jetson, Raspberry Pi) are simulated by
swapping the files doctor reads; everything else is this machine as it is.
"""

from __future__ import annotations

import ctypes
import json
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

import onnxruntime as ort
import pytest

from fusionedge.runtime import cuda_libs, doctor, provider_probe
from fusionedge.runtime import machine as machine_facts
from fusionedge.runtime.doctor import MISSING, NOT_APPLICABLE, OK, Check

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


@pytest.fixture(scope="module")
def checks() -> dict[str, Check]:
    """doctor's GPU-side lines for this machine, by name (computed once: ~1 s)."""
    return {c.name: c for c in doctor.gpu_checks()}


def loadable(name: str) -> bool:
    try:
        ctypes.CDLL(name)
    except OSError:
        return False
    return True


def ldconfig_names() -> dict[str, str]:
    out = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, check=False).stdout
    pairs = (line.strip().split(" => ") for line in out.splitlines() if " => " in line)
    return {k.split()[0]: v for k, v in pairs}


def cuda_works() -> bool:
    session = ort.InferenceSession(provider_probe.PROBE_MODEL, providers=[CUDA, CPU])
    return CUDA in session.get_providers()


def test_probe_model_is_y_equals_x_plus_x() -> None:
    onnx = pytest.importorskip("onnx")
    model = onnx.load_from_string(provider_probe.PROBE_MODEL)
    onnx.checker.check_model(model)
    (node,) = model.graph.node
    assert (node.op_type, list(node.input), list(node.output)) == ("Add", ["x", "x"], ["y"])
    assert model.ir_version == 8 and model.opset_import[0].version == 13


def test_machine_line_names_this_machine(checks: dict[str, Check]) -> None:
    machine = doctor.detect_machine()
    if platform.system() == "Linux" and platform.machine() == "x86_64":
        assert machine.case == "x86_64-linux"
    assert checks["machine"].status == OK
    assert machine.case in checks["machine"].detail
    # The PCI scan, by other means: every device whose vendor file says NVIDIA.
    nvidia = [
        p.name
        for p in Path("/sys/bus/pci/devices").glob("*")
        if (p / "vendor").read_text().strip() == "0x10de"
        and (p / "class").read_text().startswith("0x03")
    ]
    assert sorted(nvidia) == machine.nvidia_pci


def test_onnxruntime_line(checks: dict[str, Check]) -> None:
    line = checks["onnxruntime"]
    assert line.status == OK
    assert ort.__version__ in line.detail
    for provider in ort.get_available_providers():
        assert provider in line.detail
    major = getattr(ort, "cuda_version", "")
    assert (f"built for CUDA {major}" if major else "built without CUDA") in line.detail


def test_driver_and_gpu_lines_match_libcuda(checks: dict[str, Check]) -> None:
    driver, gpus = checks["nvidia driver"], checks["gpus"]
    has_proc = Path("/proc/driver/nvidia/version").exists()
    if not loadable("libcuda.so.1"):
        assert "libcuda.so.1 not loadable" in driver.detail
        assert ("no /proc/driver/nvidia/version" in driver.detail) != has_proc
        assert ("no nvidia-smi" in driver.detail) == (shutil.which("nvidia-smi") is None)
        if doctor.detect_machine().nvidia_pci:  # a GPU the driver would serve
            assert driver.status == MISSING
            assert driver.fix == doctor.driver_fix(doctor.detect_machine())
            assert gpus.status == MISSING
    else:
        assert driver.status in (OK, MISSING)  # missing: too old for this onnxruntime's CUDA
        assert "supports CUDA up to" in driver.detail


def test_no_gpu_means_no_driver_needed(checks: dict[str, Check]) -> None:
    """No NVIDIA GPU on the PCI bus (this project's CI): a driver would serve nothing, so
    its line is not applicable and names no fix; so are the gpus and CUDA provider lines.
    The library lines keep their status (a container may be built here for a GPU host)."""
    machine = doctor.detect_machine()
    if loadable("libcuda.so.1") or not doctor.no_nvidia_gpu(machine):
        pytest.skip("this machine has an NVIDIA driver or an NVIDIA GPU")
    driver = checks["nvidia driver"]
    assert driver.status == NOT_APPLICABLE and driver.fix is None
    assert driver.detail.startswith("no NVIDIA GPU (none on the PCI bus): everything runs on")
    assert checks["gpus"].status == NOT_APPLICABLE and checks["gpus"].fix is None
    if CUDA in ort.get_available_providers():
        assert checks["provider cuda"].status == NOT_APPLICABLE
        assert checks["provider cuda"].detail.endswith("; no NVIDIA GPU here")


def test_a_gpu_without_its_driver_is_missing_with_the_fix(monkeypatch) -> None:
    """The same machine with an NVIDIA GPU on its PCI bus and still no driver."""
    monkeypatch.setattr(machine_facts, "nvidia_pci_devices", lambda: ["0000:01:00.0"])
    machine = doctor.detect_machine()
    state = {"proc_version": None, "nvidia_smi": None, "libcuda": {"loadable": False, "error": "x"}}
    driver, gpus = doctor.check_driver(machine, state), doctor.check_gpus(machine, state)
    assert driver.status == MISSING and driver.fix == doctor.driver_fix(machine)
    assert "NVIDIA GPU(s) on the PCI bus at 0000:01:00.0" in driver.detail
    assert gpus.status == MISSING and gpus.fix == driver.fix


def test_driver_fix_is_one_command_per_distro() -> None:
    machine = doctor.detect_machine()
    for release, expected in [
        ({"ID": "ubuntu"}, "sudo ubuntu-drivers install"),
        ({"ID": "linuxmint", "ID_LIKE": "ubuntu debian"}, "sudo ubuntu-drivers install"),
        ({"ID": "debian"}, "sudo apt-get install cuda-drivers"),
    ]:
        machine.os_release = release
        assert doctor.driver_fix(machine).startswith(expected)


def test_library_lines_match_the_files_on_disk(checks: dict[str, Check]) -> None:
    major = cuda_libs.ort_cuda_major()
    if major is None:
        pytest.skip("this onnxruntime has no CUDA provider")
    system = ldconfig_names()
    for relative in cuda_libs.cuda_library_paths(major):
        name = relative[-1]
        line = checks[cuda_libs.group_of(name)]
        text = line.data["libraries"][name]
        pip = [Path(d, *relative) for d in sys.path if d and Path(d, *relative).is_file()]
        if pip:  # preload_dlls loads the wheel's copy first
            assert text == f"{name} loaded from {pip[0]}", text
        elif name in system:
            assert text.startswith(f"{name} loaded from ") or system[name] in text, text
        else:
            assert text.startswith(f"{name} not found"), text
            if not name.startswith(cuda_libs.OPTIONAL_LIBS):
                assert line.status == MISSING and line.fix == doctor.cuda_fix(
                    doctor.detect_machine()
                )
    for group in ("cuda runtime", "cublas", "cudnn"):
        required_absent = [
            t
            for n, t in checks[group].data["libraries"].items()
            if " not found" in t and not n.startswith(cuda_libs.OPTIONAL_LIBS)
        ]
        assert (checks[group].status == MISSING) == bool(required_absent)


def test_cpu_provider_starts(checks: dict[str, Check]) -> None:
    line = checks["provider cpu"]
    assert line.status == OK and line.data["active"] == [CPU] and line.data["started"]


def test_cuda_that_cannot_start_is_explained_in_onnxruntimes_words(
    checks: dict[str, Check],
) -> None:
    if CUDA not in ort.get_available_providers():
        assert checks["provider cuda"].status in (MISSING, NOT_APPLICABLE)
        return
    if cuda_works():
        assert checks["provider cuda"].status == OK
        return
    line = checks["provider cuda"]
    assert line.data["requested"] == [CUDA, CPU] and line.data["active"] == [CPU]
    assert "Failed to load library libonnxruntime_providers_cuda.so" in line.detail
    assert "Require cuDNN" in line.detail  # ONNX Runtime's own warning, kept
    # The library ONNX Runtime could not find is one the other lines call missing.
    missing = re.search(r"with error: (\S+?):", line.detail).group(1)
    driver_missing = checks["nvidia driver"].status == MISSING
    libraries = {
        n: t
        for g in ("cuda runtime", "cublas", "cudnn")
        for n, t in checks[g].data["libraries"].items()
    }
    no_driver = checks["nvidia driver"].status != OK
    assert (missing == "libcuda.so.1" and no_driver) or "not found" in libraries[missing]
    if checks["nvidia driver"].status == NOT_APPLICABLE:  # no GPU: nothing to fix
        assert line.status == NOT_APPLICABLE and line.fix is None
        return
    assert line.status == MISSING
    first = doctor.first_missing(line.detail, checks)
    assert line.detail.endswith(f"; first missing: {first}")
    assert line.fix == (checks["nvidia driver"].fix if driver_missing else checks["cublas"].fix)


def test_providers_built_on_cuda_wait_for_it(checks: dict[str, Check]) -> None:
    trt = checks.get("provider tensorrt")
    if trt is None or checks["provider cuda"].status == OK:
        pytest.skip("no TensorRT provider in this build, or CUDA starts")
    assert trt.status == NOT_APPLICABLE and trt.detail.startswith("needs the CUDA provider")


def test_onnxruntime_log_lines_are_cleaned() -> None:
    raw = [
        "\x1b[1;31m2026-12-01 15:08:20.802051248 [E:onnxruntime:Default, provider_bridge_ort.cc"
        ":2458 operator()] /onnxruntime_src/onnxruntime/core/session/provider_bridge_ort.cc:2043"
        " onnxruntime::Provider& onnxruntime::ProviderLibrary::Get() [ONNXRuntimeError] : 1 : "
        "FAIL : Failed to load library /x/y/capi/libonnxruntime_providers_cuda.so with error: "
        "libcublasLt.so.13: cannot open shared object file: No such file or directory",
        "\x1b[m",
        "\x1b[0;93m2026-12-01 15:08:20.805959414 [W:onnxruntime:Default, onnxruntime_pybind_"
        "state.cc:1295 CreateExecutionProviderFactoryInstance] Failed to create CUDAExecution"
        "Provider. Require cuDNN 9.* and CUDA 13.*. Please install all dependencies\x1b[m",
    ]
    assert provider_probe.ort_messages(raw) == [
        "Failed to load library libonnxruntime_providers_cuda.so with error: libcublasLt.so.13: "
        "cannot open shared object file: No such file or directory",
        "Failed to create CUDAExecutionProvider. Require cuDNN 9.* and CUDA 13.*.",
    ]


def test_stderr_of_native_code_is_captured() -> None:
    with provider_probe.captured_stderr() as lines:
        os.write(2, b"from C\n")
    assert lines == ["from C"]


@pytest.mark.parametrize(
    ("tegra", "model", "arch", "case", "status", "fix"),
    [
        (
            "# R36 (release), REVISION: 4.3, GCID: 1, BOARD: generic, EABI: aarch64",
            "NVIDIA Jetson Orin Nano Developer Kit",
            "aarch64",
            "jetson",
            MISSING,
            "pip uninstall -y onnxruntime && pip install onnxruntime-gpu --index-url "
            "https://pypi.jetson-ai-lab.io/jp6/cu126",
        ),
        (None, "Raspberry Pi 5 Model B Rev 1.0", "aarch64", "raspberry-pi", NOT_APPLICABLE, None),
    ],
)
def test_board_cases(monkeypatch, tegra, model, arch, case, status, fix) -> None:
    """Jetson and Raspberry Pi as doctor would find them, with a CPU-only onnxruntime
    (what pip installs there from PyPI)."""
    files = {"/etc/nv_tegra_release": tegra, "/proc/device-tree/model": model}
    real = machine_facts.read_text
    monkeypatch.setattr(machine_facts, "read_text", lambda p: files[p] if p in files else real(p))
    monkeypatch.setattr(platform, "machine", lambda: arch)
    monkeypatch.setattr(machine_facts, "nvidia_pci_devices", list)  # SoC GPUs are not on PCI
    machine = doctor.detect_machine()
    assert machine.case == case and model in machine.board
    line = doctor.check_machine(machine)
    assert line.status == OK and doctor.CASE_TEXT[case] in line.detail
    cuda = doctor.no_cuda_build(machine)
    assert (cuda.status, cuda.fix) == (status, fix)


def test_portaudio_and_microphones_match_portaudio() -> None:
    import sounddevice as sd

    portaudio, microphones, cameras = doctor.device_checks(max_cameras=2)
    assert portaudio.status == OK and sd.get_portaudio_version()[1] in portaudio.detail
    inputs = [d for d in sd.query_devices() if d["max_input_channels"] > 0]
    assert (microphones.status == OK) == bool(inputs)
    assert len(microphones.data["inputs"]) == len(inputs)
    if not inputs:
        assert microphones.status == MISSING and microphones.fix
    if not list(Path("/dev").glob("video*")):
        assert cameras.status == MISSING and cameras.data["cameras"] == []


DEVICE_SCRIPT = """
import json
from fusionedge.runtime.doctor import device_checks
print("CHECK " + json.dumps([c.to_dict() for c in device_checks(max_cameras=1)]))
"""


def test_a_virtual_microphone_is_listed(monkeypatch) -> None:
    """A private PulseAudio server with a pipe source (tests/live/live_helpers.py): PortAudio
    then lists it, and so must doctor, as a fresh process would see it."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "live"))
    from live_helpers import missing_pulse_tools, pulse_virtual_mic

    if missing_pulse_tools():
        pytest.skip(f"{missing_pulse_tools()} not on PATH")
    with pulse_virtual_mic(16000) as mic:
        done = subprocess.run(
            [sys.executable, "-c", DEVICE_SCRIPT],
            env=mic.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 0, done.stderr[-2000:]
    line = next(x for x in done.stdout.splitlines() if x.startswith("CHECK "))
    portaudio, microphones, _ = json.loads(line.removeprefix("CHECK "))
    assert portaudio["status"] == OK
    assert microphones["status"] == OK, microphones
    names = [i["name"] for i in microphones["data"]["inputs"]]
    assert "pulse" in names, names
    assert 16000 in next(i for i in microphones["data"]["inputs"] if i["name"] == "pulse")["rates"]
