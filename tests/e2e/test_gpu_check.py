"""benchmarks/gpu_check.py end to end, as one command: on a GPU (marked cuda, default
settings, within the 10 minutes the issue allows) and as its CPU dry run with the
smallest settings that still run every section (marked slow).

Structure and sanity only: the figures themselves belong in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "gpu_check.py"
SECTIONS = ("training", "export", "parity", "latency", "live")
PARITY_FP32, PARITY_FP16 = 1e-3, 2e-2
LATENCY_VARIANTS = ("ort_cuda_fp32", "ort_cuda_fp32_io_binding", "ort_cpu_fp32", "torch_cuda_eager")
LIVE_FIELDS = ("capture_to_result", "preprocess", "inference", "total")
CPU, CUDA = "CPUExecutionProvider", "CUDAExecutionProvider"


def run_check(out: Path, *args: str, timeout: float) -> tuple[int, dict[str, Any], str]:
    """The script's exit code, its JSON report ({} if none) and stderr's tail."""
    cmd = [sys.executable, str(SCRIPT), "--out", str(out), *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    path = out / "gpu_check.json"
    report = json.loads(path.read_text()) if path.exists() else {}
    return done.returncode, report, done.stderr[-4000:]


def positive(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def check_percentiles(figures: dict[str, float], what: str) -> None:
    assert positive(figures["p50_ms"]), (what, figures)
    assert figures["p95_ms"] >= figures["p50_ms"], (what, figures)


def check_training(training: dict[str, Any], device: str) -> None:
    assert training["device"] == device
    assert training["epochs"] >= 1 and training["steps"] >= training["epochs"]
    assert training["train_samples"] > 0
    for key in ("samples_per_s", "epoch_s", "first_epoch_s", "train_s"):
        assert positive(training[key]), (key, training)
    assert training["samples_per_s"] == pytest.approx(
        training["train_samples"] / training["epoch_s"]
    )
    assert 0 <= training["val_accuracy"] <= 1


def check_export(export: dict[str, Any]) -> None:
    assert export["bytes"] > 0
    assert export["parity"]["failed"] == 0
    for key in ("int8", "fp16", "split"):
        assert key in export, sorted(export)


def check_parity(parity: dict[str, Any], provider: str, fp16: bool) -> None:
    bounds = {"fp32_cuda": PARITY_FP32, "fp32_cuda_io_binding": PARITY_FP32}
    bounds |= {"split_cuda": PARITY_FP32} | ({"fp16_cuda": PARITY_FP16} if fp16 else {})
    assert set(parity) == {*bounds, "fp32_cpu_accuracy"}
    for name, bound in bounds.items():
        diff = parity[name]["max_abs_diff_vs_cpu"]
        assert math.isfinite(diff) and 0 <= diff <= bound, (name, diff)
        assert parity[name]["providers"][0] == provider, (name, parity[name]["providers"])
        assert 0 <= parity[name]["accuracy"] <= 1


def check_latency(latency: dict[str, Any], fp16: bool) -> None:
    variants = {*LATENCY_VARIANTS, *(("ort_cuda_fp16",) if fp16 else ())}
    assert set(latency) == {"batch_1", "batch_8", "batch_32"}
    for batch, figures in latency.items():
        assert set(figures) == variants, (batch, sorted(figures))
        for name, f in figures.items():
            check_percentiles(f, f"{batch} {name}")
            assert positive(f["speedup_vs_torch_cuda_p50"])


def check_live(live: dict[str, Any], provider: str) -> None:
    for name, want in (("cuda", provider), ("cpu", CPU)):
        run = live[name]
        assert run["providers"][0] == want, (name, run["providers"])
        assert run["turns"] >= 10 and run["fused_fraction"] >= 0.5, (name, run)
        assert run["overflows"] == 0
        for field in LIVE_FIELDS:
            check_percentiles(run["latency_ms"][field], f"live {name} {field}")
        # what the loop adds: the turn less its Predictor.run, less than the whole turn
        added = run["added_ms"]
        assert 0 <= added["p50_ms"] <= run["latency_ms"]["total"]["p50_ms"]
        assert all(math.isfinite(v) for v in run["added_vs_bare_ms"].values())
        overhead = run["overhead"]
        assert positive(overhead["overhead_ratio"]) and positive(overhead["predict_ratio"])
        for key in ("live_turn", "predict", "session_run"):
            check_percentiles(overhead[key], f"overhead {name} {key}")


def check_report(report: dict[str, Any], provider: str, device: str, fp16: bool) -> None:
    assert report["failures"] == []
    assert set(report["section_s"]) == set(SECTIONS)
    assert all(v >= 0 for v in report["section_s"].values())
    check_training(report["training"], device)
    check_export(report["export"])
    check_parity(report["parity_on_cuda"], provider, fp16)
    check_latency(report["latency"], fp16)
    check_live(report["live"], provider)


@pytest.mark.slow
def test_cpu_dry_run_runs_every_section(tmp_path: Path) -> None:
    args = ("--cpu", "--n", "200", "--epochs", "1", "--repeats", "20", "--live-seconds", "3")
    code, report, stderr = run_check(tmp_path, *args, timeout=600)
    assert code == 0, stderr
    assert report["environment"] == {"provider": "cpu"}
    check_report(report, CPU, "cpu", fp16=False)
    assert report["training"]["amp"] is None
    assert report["live"]["cuda"]["io_binding"] is False


@pytest.mark.cuda
def test_gpu_check_on_cuda(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch sees no CUDA GPU")
    code, report, stderr = run_check(tmp_path, timeout=600)
    if code == 2:  # the script's own verdict: torch or ONNX Runtime cannot use CUDA
        pytest.skip(f"no usable CUDA: {stderr.strip().splitlines()[-1]}")
    assert code == 0, stderr
    environment = report["environment"]
    assert environment["provider"] == "cuda" and environment["gpu"]
    assert environment["torch_cuda"] and environment["ort_cuda_starts"]
    check_report(report, CUDA, "cuda", fp16=True)
    assert report["training"]["amp"] in ("bfloat16", "float16")
    assert report["live"]["cuda"]["io_binding"] is True
    assert report["total_s"] < 600
