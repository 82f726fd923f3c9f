"""Every CUDA path in one short run, for a machine with an NVIDIA GPU.

    .venv/bin/python benchmarks/gpu_check.py [--out DIR] [--n 1500] [--epochs 12]
    .venv/bin/python benchmarks/gpu_check.py --cpu --n 300 --epochs 2   # dry run, no GPU

1. demo data, then training on CUDA with mixed precision (a few hundred steps);
2. export: fp32, int8 and fp16 copies, and the split parts;
3. ONNX Runtime with the CUDA provider (strict: a silent CPU fallback fails the check):
   parity of fp32 and fp16 on CUDA against fp32 on CPU, on the validation samples, and
   the split model on CUDA against the single file;
4. batch-1 and batch-32 latency through fusionedge.timing (the variants take turns in
   blocks of 25 calls): ORT CUDA fp32 with and without IO binding, ORT CUDA fp16,
   PyTorch eager on CUDA, ORT CPU.

It prints one JSON report (and writes it to DIR/gpu_check.json) whose figures go into
benchmarks/RESULTS.md. Exits 1 when a check fails, 2 when there is no usable CUDA.
--cpu runs the same steps on the CPU (no fp16 session: ONNX Runtime's CPU provider lacks
fp16 kernels), so the script itself is tested where no GPU is lent.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

PARITY_FP32 = 1e-3  # CUDA kernels (TF32-free here) against CPU, fp32
PARITY_FP16 = 2e-2


def check_cuda() -> dict[str, Any]:
    import onnxruntime as ort
    import torch

    facts: dict[str, Any] = {
        "torch": torch.__version__,
        "torch_cuda": torch.cuda.is_available(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "onnxruntime": ort.__version__,
        "ort_providers": ort.get_available_providers(),
    }
    if not torch.cuda.is_available() or "CUDAExecutionProvider" not in facts["ort_providers"]:
        print(json.dumps(facts, indent=2))
        print("gpu_check: no usable CUDA (torch or onnxruntime-gpu)", file=sys.stderr)
        sys.exit(2)
    return facts


def train_on(device: str, out: Path, n: int, epochs: int) -> tuple[Path, Path, dict[str, Any]]:
    from fusionedge.demo.avdigits import generate
    from fusionedge.training.config import load_config
    from fusionedge.training.trainer import train

    data, run = out / "data", out / "run"
    t0 = time.perf_counter()
    if not (data / "manifest.jsonl").exists():
        generate(data, n=n, seed=0)
    t1 = time.perf_counter()
    amp = str(device == "cuda").lower()
    config = load_config(None, [f"device={device}", f"amp={amp}", f"epochs={epochs}", "patience=0"])
    result = train(data, run, config, progress=False)
    t2 = time.perf_counter()
    steps_per_epoch = -(-int(n * 0.8) // config.batch_size)
    return (
        data,
        run,
        {
            "demo_data_s": round(t1 - t0, 1),
            "train_s": round(t2 - t1, 1),
            "epochs": result.epochs_run,
            "steps": result.epochs_run * steps_per_epoch,
            "val_accuracy": result.best_metrics.get("accuracy"),
        },
    )


def export_all(run: Path, data: Path, out: Path) -> dict[str, Any]:
    from fusionedge.export.run import export_run

    report = export_run(run, out / "model.onnx", data, int8=True, fp16=True, force=True, split=True)
    return {
        k: report.get(k)
        for k in ("bytes", "parity", "int8", "fp16", "split")
        if report.get(k) is not None
    }


def parity_on(provider: str, out: Path, data: Path) -> dict[str, Any]:
    from fusionedge.arrays import load_arrays
    from fusionedge.contract import split_folder
    from fusionedge.manifest import read_manifest
    from fusionedge.runtime import Predictor

    model = out / "model.onnx"
    cpu = Predictor.from_path(model, providers="cpu")
    manifest = read_manifest(data)
    samples = load_arrays(manifest.split("val")[:256], cpu.spec, manifest.path)
    inputs = samples.inputs()
    reference = cpu.run(inputs)[0]
    labels = samples.targets
    checks: dict[str, Any] = {}
    variants = [
        ("fp32_cuda", model, False),
        ("fp32_cuda_io_binding", model, True),
        ("fp16_cuda", model.with_name("model.fp16.onnx"), False),
        ("split_cuda", split_folder(model), False),
    ]
    if provider == "cpu":
        variants = [v for v in variants if v[0] != "fp16_cuda"]
    for name, path, binding in variants:
        predictor = Predictor.from_path(path, providers=[provider], strict=True, io_binding=binding)
        scores = predictor.run(inputs)[0]
        checks[name] = {
            "providers": predictor.providers,
            "max_abs_diff_vs_cpu": float(np.abs(scores - reference).max()),
            "accuracy": float((scores.argmax(1) == labels).mean()),
        }
    checks["fp32_cpu_accuracy"] = float((reference.argmax(1) == labels).mean())
    return checks


def interleaved_latency(
    provider: str, out: Path, data: Path, run: Path, repeats: int = 300
) -> dict[str, Any]:
    """Model-only milliseconds per call, timed through fusionedge.timing: after 20 warm-up
    calls each, the variants take turns in blocks of 25 calls (batch 1: one test sample
    after another, the same one for every variant at the same call; batch 32: one fixed
    batch)."""
    import torch

    from fusionedge.arrays import load_arrays
    from fusionedge.manifest import read_manifest
    from fusionedge.runtime import Predictor
    from fusionedge.timing import batch_of_one, latency_stats, timed_call
    from fusionedge.training.checkpoint import load_model

    model = out / "model.onnx"
    cuda = {"providers": [provider], "strict": True}
    variants = {
        "ort_cuda_fp32": Predictor.from_path(model, io_binding=False, **cuda),
        "ort_cuda_fp32_io_binding": Predictor.from_path(model, io_binding=True, **cuda),
        "ort_cpu_fp32": Predictor.from_path(model, providers="cpu"),
    }
    if provider == "cuda":
        variants["ort_cuda_fp16"] = Predictor.from_path(model.with_name("model.fp16.onnx"), **cuda)
    first = variants["ort_cpu_fp32"]
    manifest = read_manifest(data)
    samples = load_arrays(manifest.split("test")[:64], first.spec, manifest.path).inputs()
    device = torch.device(provider)
    torch_model = load_model(run / "best.safetensors", device).eval()

    def torch_call(batch: dict[str, np.ndarray]) -> None:
        with torch.inference_mode():
            torch_model(**{k: torch.from_numpy(v).to(device) for k, v in batch.items()})
        if device.type == "cuda":
            torch.cuda.synchronize()

    runs = {name: p.run for name, p in variants.items()}
    runs["torch_cuda_eager"] = torch_call
    report: dict[str, Any] = {}
    for size in (1, 32):
        batch = {k: np.ascontiguousarray(v[np.arange(size) % len(v)]) for k, v in samples.items()}
        inputs_for = batch_of_one(samples) if size == 1 else (lambda _i, b=batch: b)
        calls = {name: timed_call(inputs_for, fn) for name, fn in runs.items()}
        figures = latency_stats(calls, repeats, warmup=20, percentiles=(50, 95))
        report[f"batch_{size}"] = {
            name: {"p50_ms": f["p50_ms"], "p95_ms": f["p95_ms"]} for name, f in figures.items()
        }
        base = report[f"batch_{size}"]["torch_cuda_eager"]["p50_ms"]
        for v in report[f"batch_{size}"].values():
            v["speedup_vs_torch_cuda_p50"] = base / v["p50_ms"]
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("gpu_check"))
    parser.add_argument("--n", type=int, default=1500, help="demo samples")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=300, help="timed calls per variant")
    parser.add_argument("--cpu", action="store_true", help="dry run of every step on the CPU")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    provider = "cpu" if args.cpu else "cuda"

    report: dict[str, Any] = {"environment": {"provider": provider}}
    if not args.cpu:
        report["environment"] |= check_cuda()
    data, run, report["training"] = train_on(provider, args.out, args.n, args.epochs)
    report["export"] = export_all(run, data, args.out)
    report["parity_on_cuda"] = parity_on(provider, args.out, data)
    report["latency"] = interleaved_latency(provider, args.out, data, run, args.repeats)
    parity = report["parity_on_cuda"]
    expected = "CPUExecutionProvider" if args.cpu else "CUDAExecutionProvider"
    failures = [
        name
        for name, limit in (
            ("fp32_cuda", PARITY_FP32),
            ("fp32_cuda_io_binding", PARITY_FP32),
            ("split_cuda", PARITY_FP32),
            ("fp16_cuda", PARITY_FP16),
        )
        if name in parity
        and (
            parity[name]["max_abs_diff_vs_cpu"] > limit or parity[name]["providers"][0] != expected
        )
    ]
    report["failures"] = failures
    text = json.dumps(report, indent=2, default=str)
    (args.out / "gpu_check.json").write_text(text + "\n")
    print(text)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
