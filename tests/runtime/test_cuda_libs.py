"""The CUDA libraries (fusionedge.runtime.cuda_libs): where they are on this machine, and
the preload that open_session runs once per process before a session asks for CUDA.

The preload tests replace onnxruntime.preload_dlls with a recorder and reset the
module's once-per-process record (monkeypatch restores both). The last test runs a
fresh interpreter where NVIDIA's pip wheels are installed (skipped elsewhere: see
docs/GPU.md) and reads /proc/self/maps there.
"""

from __future__ import annotations

import ctypes
import json
import logging
import re
import subprocess
import sys
from pathlib import Path

import onnxruntime as ort
import pytest

from fusionedge.runtime import cuda_libs
from fusionedge.runtime.provider_probe import PROBE_MODEL
from fusionedge.runtime.sessions import open_session, session_options

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


@pytest.fixture
def probe_model(tmp_path: Path) -> Path:
    path = tmp_path / "probe.onnx"
    path.write_bytes(PROBE_MODEL)
    return path


@pytest.fixture
def calls(monkeypatch) -> list[dict]:
    """The calls of onnxruntime.preload_dlls in a process where the preload has not run
    yet, nothing CUDA is mapped and onnxruntime is a CUDA 13 build."""
    made: list[dict] = []

    def recorder(**kwargs) -> None:
        made.append(kwargs)
        print("Failed to load libcublasLt.so.13: recorded")  # as preload_dlls reports

    monkeypatch.setattr(ort, "preload_dlls", recorder, raising=False)
    monkeypatch.setattr(cuda_libs, "_preloaded", None)
    monkeypatch.setattr(cuda_libs, "ort_cuda_major", lambda: 13)
    monkeypatch.setattr(cuda_libs, "loaded_libraries", dict)
    return made


def test_open_session_preloads_once_and_only_for_cuda(probe_model: Path, calls) -> None:
    open_session(probe_model, session_options(threads=1), [CPU])
    assert calls == [] and cuda_libs._preloaded is None  # a CPU session loads no CUDA
    for _ in range(3):
        session = open_session(probe_model, session_options(threads=1), [CUDA, CPU])
        assert session.get_providers()[-1] == CPU
    assert calls == [{"cuda": True, "cudnn": True}]
    record = cuda_libs._preloaded
    assert record["called"] and record["printed"] == ["Failed to load libcublasLt.so.13: recorded"]
    assert "libcublasLt.so.13" in record["not_loaded"]
    assert cuda_libs.preload() is record  # later calls: the same record, no new call


def test_tensorrt_and_provider_options_count_as_cuda(probe_model: Path, calls) -> None:
    assert cuda_libs.needs_cuda_libraries([("CUDAExecutionProvider", {"device_id": 0}), CPU])
    assert cuda_libs.needs_cuda_libraries(["TensorrtExecutionProvider", CPU])
    assert not cuda_libs.needs_cuda_libraries([CPU])
    open_session(probe_model, session_options(threads=1), ["TensorrtExecutionProvider", CPU])
    assert len(calls) == 1


def test_what_did_not_load_is_a_warning(probe_model: Path, calls, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger=cuda_libs.__name__):
        open_session(probe_model, session_options(threads=1), [CUDA, CPU])
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "onnxruntime.preload_dlls(): Failed to load libcublasLt.so.13: recorded" in warnings
    (summary,) = [w for w in warnings if w.startswith("CUDA libraries not loaded: ")]
    for name in ("libcublasLt.so.13", "libcublas.so.13", "libcudart.so.13", "libcudnn.so.9"):
        assert name in summary
    assert "libcufft" not in summary and "libnvrtc" not in summary  # optional ones


def test_libraries_already_in_the_process_are_not_loaded_again(monkeypatch, calls) -> None:
    """torch with the same CUDA major imported first has mapped them: no preload (ONNX
    Runtime's docs), so no second copy under one soname. Only a missing cuDNN: cuDNN only."""
    names = [r[-1] for r in cuda_libs.cuda_library_paths(13)]
    monkeypatch.setattr(cuda_libs, "loaded_libraries", lambda: {n: f"/t/{n}" for n in names})
    assert cuda_libs.preload()["skipped"] == cuda_libs.ALREADY_LOADED and calls == []
    without_cudnn = {n: f"/t/{n}" for n in names if not n.startswith("libcudnn")}
    monkeypatch.setattr(cuda_libs, "_preloaded", None)
    monkeypatch.setattr(cuda_libs, "loaded_libraries", lambda: without_cudnn)
    cuda_libs.preload()
    assert calls == [{"cuda": False, "cudnn": True}]


def test_a_preload_that_raises_is_logged_not_raised(probe_model: Path, calls, monkeypatch, caplog):
    def broken(**kwargs) -> None:
        raise RuntimeError("Invalid parameter of directory=x. The directory does not exist!")

    monkeypatch.setattr(ort, "preload_dlls", broken)
    with caplog.at_level(logging.WARNING, logger=cuda_libs.__name__):
        session = open_session(probe_model, session_options(threads=1), [CUDA, CPU])
    assert session.get_providers() == [CPU]
    assert cuda_libs.preload()["error"].startswith("RuntimeError: Invalid parameter")
    assert any("preload_dlls() failed: RuntimeError" in r.getMessage() for r in caplog.records)


def test_no_preload_dlls_is_said(monkeypatch, caplog) -> None:
    monkeypatch.setattr(cuda_libs, "_preloaded", None)
    monkeypatch.setattr(cuda_libs, "ort_cuda_major", lambda: 13)
    monkeypatch.delattr(ort, "preload_dlls", raising=False)
    with caplog.at_level(logging.WARNING, logger=cuda_libs.__name__):
        record = cuda_libs.preload()
    assert not record["called"] and "has no preload_dlls()" in record["skipped"]
    assert any("has no preload_dlls()" in r.getMessage() for r in caplog.records)


# ------------------------------------------------------------- this machine's libraries


def ldconfig_names() -> dict[str, str]:
    out = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, check=False).stdout
    pairs = (line.strip().split(" => ") for line in out.splitlines() if " => " in line)
    return {k.split()[0]: v for k, v in pairs}


def test_library_table_is_onnxruntimes() -> None:
    major = cuda_libs.ort_cuda_major()
    if major is None:
        pytest.skip("this onnxruntime has no CUDA provider")
    relatives = cuda_libs.cuda_library_paths(major)
    names = [r[-1] for r in relatives]
    assert f"libcublasLt.so.{major}" in names and "libcudnn.so.9" in names
    # cuBLASLt before cuBLAS: libcublas needs it (onnxruntime's own order).
    assert names.index(f"libcublasLt.so.{major}") < names.index(f"libcublas.so.{major}")
    assert {cuda_libs.group_of(n) for n in names} == {"cuda runtime", "cublas", "cudnn"}


def test_locate_follows_the_wheels_then_the_loader_cache() -> None:
    major = cuda_libs.ort_cuda_major() or 13
    system, truth = cuda_libs.ldconfig_libraries(), ldconfig_names()
    assert system["libc.so.6"] == truth["libc.so.6"]
    for relative in cuda_libs.cuda_library_paths(major):
        name = relative[-1]
        wheel = [Path(d, *relative) for d in sys.path if d and Path(d, *relative).is_file()]
        found = cuda_libs.locate(relative, system)
        if wheel:
            assert found == (str(wheel[0]), "NVIDIA pip wheel")
        elif found is not None and found[1] == "LD_LIBRARY_PATH":
            assert Path(found[0]).is_file()
        elif name in truth:
            assert found == (truth[name], "system (ldconfig)")
        else:
            assert found is None, found


def test_loaded_libraries_are_this_process_mappings() -> None:
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    loaded = cuda_libs.loaded_libraries()
    assert str(Path(state.__file__).resolve()) in {str(Path(p).resolve()) for p in loaded.values()}
    libc = cuda_libs.mapped_path("libc.so.6", loaded)
    assert libc is not None and Path(libc).is_file()
    assert cuda_libs.mapped_path("libnothing.so.1", loaded) is None


# --------------------------------------------------- with NVIDIA's pip wheels, no driver

CHILD = """
import json, sys
from pathlib import Path
from fusionedge.runtime import cuda_libs
from fusionedge.runtime.sessions import open_session, session_options
session = open_session(Path(sys.argv[1]), session_options(threads=1),
                       ["CUDAExecutionProvider", "CPUExecutionProvider"])
print("RESULT " + json.dumps({"providers": session.get_providers(),
                              "preload": cuda_libs.preload(),
                              "loaded": cuda_libs.loaded_libraries()}))
"""


# The same session without open_session, hence without the preload: the control.
BARE = """
import sys, onnxruntime as ort
ort.InferenceSession(sys.argv[1], providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
"""


def child(script: str, model: Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-c", script, str(model)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def wheel_libraries() -> list[Path]:
    """The required libraries as NVIDIA's wheels put them in this environment."""
    major = cuda_libs.ort_cuda_major()
    found = []
    for relative in cuda_libs.cuda_library_paths(major) if major else []:
        paths = [Path(d, *relative) for d in sys.path if d and Path(d, *relative).is_file()]
        if paths and cuda_libs.required(relative[-1]):
            found.append(paths[0])
    return found


def test_a_cuda_session_loads_the_wheels(probe_model: Path) -> None:
    """In a fresh interpreter with onnxruntime-gpu[cuda,cudnn]: after open_session asked
    for CUDA, every required library is mapped from site-packages/nvidia, and without a
    driver ONNX Runtime's reason for the fallback has moved on to libcuda.so.1, where a
    bare InferenceSession still stops at one of the wheels' libraries."""
    wheels = wheel_libraries()
    if len(wheels) < 5:  # cuBLASLt, cuBLAS, cuRAND, the CUDA runtime, cuDNN
        pytest.skip("NVIDIA's CUDA and cuDNN pip libraries are not installed here")
    done = child(CHILD, probe_model)
    result = json.loads(next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))[7:])
    assert result["preload"]["called"] and result["preload"]["not_loaded"] == []
    for path in wheels:
        mapped = cuda_libs.mapped_path(path.name, result["loaded"])
        assert mapped is not None and Path(mapped).resolve() == path.resolve(), path.name
        assert "/site-packages/nvidia/" in mapped
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        bare = child(BARE, probe_model).stderr
        # Without the preload it stops at one of the wheels' libraries.
        assert re.search(r"providers_cuda\.so with error: lib(cublas|cudart|curand|cudnn)", bare)
        assert "libcuda.so.1" not in bare
        assert result["providers"] == [CPU]
        assert "with error: libcuda.so.1: cannot open shared object file" in done.stderr
        assert "libcublasLt.so" not in done.stderr  # the libraries are no longer the cause
    else:  # a driver: with the libraries preloaded, CUDA must start
        assert result["providers"][0] == CUDA, done.stderr[-3000:]
