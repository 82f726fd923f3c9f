"""A local tritonserver for tests and benchmarks: the one the nvidia-pytriton wheel ships
(Python backend only), started on 127.0.0.1 on a repository of `fusionedge triton`.

Its Python-backend stub is built against numpy 1 and finds its Python as the first
`python3` on PATH (PYTHONPATH is ignored), loading that Python's libpython: so the server
runs with a Python that has fusionedge and numpy<2 (FUSIONEDGE_TRITON_PYTHON in the
tests), put first on PATH and LD_LIBRARY_PATH here.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path


class ServerUnavailable(RuntimeError):
    """No tritonserver can run here (nvidia-pytriton missing, or its stub cannot serve
    from the given Python); the message says why."""


def pytriton_server() -> Path:
    """The tritonserver folder that the nvidia-pytriton wheel ships (bin/, backends/,
    python_backend_stubs/). Found without importing pytriton, whose own dependencies the
    server does not need."""
    import importlib.util

    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise ServerUnavailable("nvidia-pytriton is not installed (pip install nvidia-pytriton)")
    folder = Path(next(iter(spec.submodule_search_locations))) / "tritonserver"
    if not (folder / "bin" / "tritonserver").is_file():
        raise ServerUnavailable(f"{folder}: no bin/tritonserver in this nvidia-pytriton")
    return folder


def stub_python(python: str | Path) -> dict[str, str]:
    """What the Python-backend stub needs to know of the Python it will embed: version,
    LIBDIR (its libpython) and numpy's version; fusionedge.runtime must import there."""
    probe = (
        "import json, sys, sysconfig, numpy, fusionedge.runtime; print(json.dumps({"
        "'version': '%d.%d' % sys.version_info[:2], 'libdir': sysconfig.get_config_var('LIBDIR'),"
        " 'numpy': numpy.__version__}))"
    )
    done = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise ServerUnavailable(
            f"{python} cannot import numpy and fusionedge: {done.stderr[-500:]}"
        )
    return json.loads(done.stdout)


def server_env(python: Path, info: dict[str, str], libs: Path) -> dict[str, str]:
    """The server's environment. The stub embeds libpython3.X.so and finds its prefix by
    the `python3` first on PATH: the given Python's bin folder goes first, so its
    site-packages (fusionedge, numpy) are the stub's; its LIBDIR goes on LD_LIBRARY_PATH,
    so the libpython matches that Python's standard library (a system libpython with a
    pyenv standard library fails on the first request)."""
    env = dict(os.environ)
    env["PATH"] = f"{python.parent}{os.pathsep}{env.get('PATH', '')}"
    paths = [info["libdir"], str(libs), env.get("LD_LIBRARY_PATH", "")]
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in paths if p)
    env.pop("PYTHONPATH", None)  # the stub ignores it; fusionedge must be installed there
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def local_server(
    repo: str | Path,
    models: Sequence[str],
    python: str | Path | None = None,
    timeout: float = 60.0,
) -> Iterator[str]:
    """nvidia-pytriton's tritonserver on 127.0.0.1 serving `models` of repo (HTTP only);
    yields "127.0.0.1:PORT" once the server is ready, stops it on exit. For tests,
    benchmarks and trying a repository without Docker.

    python: the Python whose packages the Python backend uses (default: this one); it
    needs fusionedge and, for pytriton 0.7's stub, numpy < 2.

    Raises:
        ServerUnavailable: no pytriton, a numpy >= 2 for its stub, or no stub for that
            Python's version.
        RuntimeError: the server exited or was not ready in time (with its log's end).
    """
    server = pytriton_server()
    python = Path(python or sys.executable)
    info = stub_python(python)
    if int(info["numpy"].split(".")[0]) >= 2:
        # Its pybind11 predates numpy 2: arrays it builds read a numpy 2 dtype's item
        # size wrongly, so every tensor reaches model.py as garbage (checked here).
        raise ServerUnavailable(
            f"{python} has numpy {info['numpy']}; nvidia-pytriton's Python-backend stub "
            "needs numpy < 2 (give a Python with fusionedge and numpy<2)"
        )
    stub = server / "python_backend_stubs" / info["version"] / "triton_python_backend_stub"
    if not stub.is_file():
        raise ServerUnavailable(f"nvidia-pytriton has no stub for Python {info['version']}")
    port = free_port()
    prefix = f"fusionedge{os.getpid()}_{port}_"
    with tempfile.TemporaryDirectory(prefix="fusionedge-triton-") as tmp:
        backends = Path(tmp) / "backends"
        shutil.copytree(server / "backends", backends)
        shutil.copy(stub, backends / "python")
        command = [
            str(server / "bin" / "tritonserver"),
            f"--model-repository={Path(repo).resolve()}",
            f"--backend-directory={backends}",
            "--model-control-mode=explicit",
            *[f"--load-model={m}" for m in models],
            "--http-address=127.0.0.1",
            f"--http-port={port}",
            "--allow-grpc=false",
            "--allow-metrics=false",
            "--exit-timeout-secs=5",
            # A prefix of our own: regions of another server on this machine never clash.
            f"--backend-config=python,shm-region-prefix-name={prefix}",
        ]
        libs = server.parent.parent / "nvidia_pytriton.libs"
        log_path = Path(tmp) / "tritonserver.log"
        with open(log_path, "wb") as log_file:
            process = subprocess.Popen(
                command,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=server_env(python, info, libs),
            )
            try:
                wait_ready(process, port, timeout, log_path)
                yield f"127.0.0.1:{port}"
            finally:
                stop(process)
                # A server stopped while a stub is busy leaves its regions behind.
                for region in Path("/dev/shm").glob(f"{prefix}*"):
                    region.unlink(missing_ok=True)


def wait_ready(process: subprocess.Popen, port: int, timeout: float, log: Path) -> None:
    """Polls /v2/health/ready; raises RuntimeError with the log's end on exit or timeout."""
    deadline = time.monotonic() + timeout
    url = f"http://127.0.0.1:{port}/v2/health/ready"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    tail = log.read_text(errors="replace")[-3000:]
    state = f"exited with {process.returncode}" if process.poll() is not None else "not ready"
    stop(process)
    raise RuntimeError(f"tritonserver {state} after {timeout:.0f} s; its log ends:\n{tail}")


def stop(process: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL after 15 s (the server waits up to --exit-timeout-secs)."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
