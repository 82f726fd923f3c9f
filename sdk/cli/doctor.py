"""`fusionedge doctor`: the runtime's checks (fusionedge.runtime.doctor), torch's, and
the report as lines or JSON.

torch is asked in a child interpreter: importing it here would load its own CUDA
libraries into the process whose ONNX Runtime providers were just tried, and would make
`fusionedge doctor` as slow to start as training. docs/GPU.md tells each case.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from typing import Any

from fusionedge.jsonio import dumps
from fusionedge.runtime.cuda_libs import ort_cuda_major
from fusionedge.runtime.doctor import (
    MISSING,
    NOT_APPLICABLE,
    OK,
    STATUSES,
    Check,
    device_checks,
    gpu_checks,
)
from fusionedge.version import __version__

TORCH_PROBE = """
import json, torch
cuda = torch.cuda.is_available()
print("TORCH " + json.dumps({
    "version": torch.__version__,
    "cuda_build": torch.version.cuda,
    "cuda_available": cuda,
    "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    if cuda else [],
    "cudnn": torch.backends.cudnn.version() if cuda else None,
}))
"""
TORCH_INDEX = "https://download.pytorch.org/whl"


def probe_torch(timeout: float = 120) -> dict[str, Any]:
    """What torch says about itself and CUDA, from a child interpreter; {"error": ...}
    when it cannot import."""
    done = subprocess.run(
        [sys.executable, "-c", TORCH_PROBE],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    lines = [x for x in done.stdout.splitlines() if x.startswith("TORCH ")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"torch does not import: {tail}"}
    return json.loads(lines[-1].removeprefix("TORCH "))


def torch_wheel(cuda_major: int | None) -> str:
    """The pip command of a torch build for the CUDA major that onnxruntime-gpu uses, so
    that one process can hold both (docs/GPU.md, "torch and onnxruntime-gpu")."""
    tag = {12: "cu126", 13: "cu130"}.get(cuda_major or 13, "cu130")
    return f"pip install torch --index-url {TORCH_INDEX}/{tag}"


def torch_checks(gpus: Check) -> list[Check]:
    """The torch line (needed for training and export only) and its CUDA line."""
    if importlib.util.find_spec("torch") is None:
        detail = "not installed: needed to train and export, not to run a model"
        return [
            Check("torch", MISSING, detail, 'pip install "fusionedge[train]"'),
            Check("torch cuda", NOT_APPLICABLE, "no torch"),
        ]
    torch = probe_torch()
    if "error" in torch:
        fix = 'pip install --force-reinstall "fusionedge[train]"'
        return [
            Check("torch", MISSING, torch["error"], fix),
            Check("torch cuda", NOT_APPLICABLE, ""),
        ]
    build = f"built for CUDA {torch['cuda_build']}" if torch["cuda_build"] else "CPU-only build"
    line = Check("torch", OK, f"{torch['version']} ({build})", data=torch)
    return [line, torch_cuda_check(torch, gpus)]


def torch_cuda_check(torch: dict[str, Any], gpus: Check) -> Check:
    available = f"torch.cuda.is_available() is {torch['cuda_available']}"
    ort_major = ort_cuda_major()
    if torch["cuda_available"]:
        detail = f"{available}: {', '.join(torch['devices'])} (cuDNN {torch['cudnn']})"
        build_major = int(torch["cuda_build"].split(".")[0])
        if ort_major and build_major != ort_major:
            # Two CUDA majors in one process: whichever loads first serves both.
            detail += f"; onnxruntime-gpu wants CUDA {ort_major}, torch brings {build_major}"
            return Check("torch cuda", MISSING, detail, torch_wheel(ort_major), torch)
        return Check("torch cuda", OK, detail, data=torch)
    if gpus.status != OK:
        detail = f"{available}: no GPU here, training runs on the CPU"
        return Check("torch cuda", NOT_APPLICABLE, detail, data=torch)
    why = "a CPU-only build" if not torch["cuda_build"] else "the GPU is not usable by it"
    return Check("torch cuda", MISSING, f"{available}: {why}", torch_wheel(ort_major), torch)


def run_doctor(max_cameras: int = 8, torch: bool = True) -> dict[str, Any]:
    """Every check in report order, with a count per status."""
    checks = gpu_checks()
    gpus = next(c for c in checks if c.name == "gpus")
    if torch:
        checks += torch_checks(gpus)
    checks += device_checks(max_cameras)
    return {
        "fusionedge": __version__,
        "python": sys.version.split()[0],
        "checks": [c.to_dict() for c in checks],
        "summary": {s: sum(c.status == s for c in checks) for s in STATUSES},
    }


def format_doctor(report: dict[str, Any]) -> str:
    """One line per check: status word, name, what was seen, and the fix."""
    width = max(len(s) for s in STATUSES) + 2
    lines = [f"fusionedge {report['fusionedge']}, Python {report['python']}"]
    for check in report["checks"]:
        fix = f"  -> fix: {check['fix']}" if check["fix"] and check["status"] != OK else ""
        lines.append(f"{check['status']:<{width}}{check['name']}: {check['detail']}{fix}")
    summary = report["summary"]
    lines.append(
        f"{summary[OK]} ok, {summary[MISSING]} missing, {summary[NOT_APPLICABLE]} not applicable"
    )
    return "\n".join(lines)


def print_doctor(max_cameras: int, as_json: bool) -> None:
    report = run_doctor(max_cameras)
    print(dumps(report) if as_json else format_doctor(report))
