"""Every CUDA path in one short run, for a machine with an NVIDIA GPU.

    .venv/bin/python benchmarks/gpu_check.py [--out DIR] [--n 1500] [--epochs 12]
    .venv/bin/python benchmarks/gpu_check.py --cpu --n 200 --epochs 1   # dry run, no GPU

1. demo data, then training on CUDA with mixed precision (a few hundred steps); the
   throughput is training samples per second of an epoch (median of the epochs after the
   first, which pays for CUDA start-up; an epoch's time includes its validation pass);
2. export: fp32, int8 and fp16 copies, and the split parts;
3. ONNX Runtime with the CUDA provider (strict: a silent CPU fallback fails the check):
   parity of fp32 (plain and with IO binding) and fp16 on CUDA against fp32 on CPU, on
   the validation samples, and the split model on CUDA against the single file;
4. batch 1, 8 and 32 latency through fusionedge.timing (the variants take turns in
   blocks of 25 calls): ORT CUDA fp32 with and without IO binding, ORT CUDA fp16,
   PyTorch eager on CUDA, ORT CPU;
5. the live loop (benchmarks/gpu_live.py): a LiveRunner on a file camera and a WAV made
   from the test samples, with the CUDA predictor and then the CPU one: per-turn latency
   and what the loop adds to the model, and fusionedge.runtime.bench.overhead.

The defaults take a few minutes on one GPU (the test marked `cuda` allows 10). It prints
one JSON report (and writes it to DIR/gpu_check.json) whose figures go into
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

from fusionedge.timing import Laps

PARITY_FP32 = 1e-3  # CUDA kernels (TF32-free here) against CPU, fp32
PARITY_FP16 = 2e-2
BATCHES = (1, 8, 32)


def check_cuda() -> dict[str, Any]:
    """What CUDA this process has; exits 2 unless torch has a GPU and ONNX Runtime's CUDA
    provider really starts (listed is not enough: without its libraries it falls back)."""
    import onnxruntime as ort
    import torch

    facts: dict[str, Any] = {
        "torch": torch.__version__,
        "torch_cuda": torch.cuda.is_available(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "onnxruntime": ort.__version__,
        "ort_providers": ort.get_available_providers(),
    }
    facts["ort_cuda_starts"] = ort_cuda_starts()
    if not (facts["torch_cuda"] and facts["ort_cuda_starts"]):
        print(json.dumps(facts, indent=2))
        print(
            "gpu_check: no usable CUDA (torch or onnxruntime-gpu); `fusionedge doctor` tells why",
            file=sys.stderr,
        )
        sys.exit(2)
    return facts


def ort_cuda_starts() -> bool:
    """Whether a one-node session asked for CUDA gets it (after the runtime's preload)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    try:  # the runtime loads NVIDIA's pip libraries before its first CUDA session
        from fusionedge.runtime import cuda_libs

        cuda_libs.preload()
    except ImportError:
        pass
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    try:
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        session = ort.InferenceSession(model.SerializeToString(), providers=providers)
    except Exception:
        return False
    return session.get_providers()[0] == "CUDAExecutionProvider"


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
    return (
        data,
        run,
        {
            "device": device,
            "amp": amp_dtype(device),
            "batch_size": config.batch_size,
            "demo_data_s": round(t1 - t0, 1),
            "train_s": round(t2 - t1, 1),
            "epochs": result.epochs_run,
            "val_accuracy": result.best_metrics.get("accuracy"),
            **throughput(data, run),
        },
    )


def amp_dtype(device: str) -> str | None:
    """The autocast dtype training used on CUDA (None: no mixed precision)."""
    if device != "cuda":
        return None
    import torch

    from fusionedge.training.device import amp_dtype as pick

    return str(pick(torch.device("cuda"))).removeprefix("torch.")


def throughput(data: Path, run: Path) -> dict[str, Any]:
    """Training samples per second of an epoch, from the run's log.csv: the median of the
    epochs after the first (which pays for start-up) where there are any."""
    import csv

    from fusionedge.manifest import read_manifest

    rows = list(csv.DictReader((run / "log.csv").open()))
    seconds = [float(r["seconds"]) for r in rows]
    samples = len(read_manifest(data).split("train"))
    steady = seconds[1:] or seconds
    return {
        "train_samples": samples,
        "steps": int(rows[-1]["step"]),
        "first_epoch_s": seconds[0],
        "epoch_s": float(np.median(steady)),
        "samples_per_s": samples / float(np.median(steady)),
    }


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
    after another, the same one for every variant at the same call; batch 8 and 32: one
    fixed batch each)."""
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
    for size in BATCHES:
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


def parity_failures(parity: dict[str, Any], expected: str) -> list[str]:
    """Names of the parity checks over their bound or not on the expected provider."""
    limits = {
        "fp32_cuda": PARITY_FP32,
        "fp32_cuda_io_binding": PARITY_FP32,
        "split_cuda": PARITY_FP32,
        "fp16_cuda": PARITY_FP16,
    }
    return [
        name
        for name, limit in limits.items()
        if name in parity
        and not (
            parity[name]["max_abs_diff_vs_cpu"] <= limit
            and parity[name]["providers"][0] == expected
        )
    ]


def run_checks(args: argparse.Namespace, report: dict[str, Any]) -> None:
    """Every section into report, each with its seconds under "section_s"."""
    from gpu_live import live_section

    provider, out = ("cpu" if args.cpu else "cuda"), args.out
    lap = Laps(into=report["section_s"]).lap

    data, run, report["training"] = train_on(provider, out, args.n, args.epochs)
    lap("training")
    report["export"] = export_all(run, data, out)
    lap("export")
    report["parity_on_cuda"] = parity_on(provider, out, data)
    lap("parity")
    report["latency"] = interleaved_latency(provider, out, data, run, args.repeats)
    lap("latency")
    model = out / "model.onnx"
    report["live"] = live_section(model, data, out, provider, args.live_seconds, args.repeats)
    lap("live")


def main() -> int:
    from gpu_live import live_failures

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("gpu_check"))
    parser.add_argument("--n", type=int, default=1500, help="demo samples")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=300, help="timed calls per variant")
    parser.add_argument(
        "--live-seconds", type=float, default=15.0, help="live loop run per predictor"
    )
    parser.add_argument("--cpu", action="store_true", help="dry run of every step on the CPU")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    report: dict[str, Any] = {"environment": {"provider": "cpu" if args.cpu else "cuda"}}
    if not args.cpu:
        report["environment"] |= check_cuda()
    report["section_s"] = {}
    run_checks(args, report)
    report["total_s"] = round(time.perf_counter() - started, 1)
    expected = "CPUExecutionProvider" if args.cpu else "CUDAExecutionProvider"
    failures = parity_failures(report["parity_on_cuda"], expected)
    report["failures"] = failures + live_failures(report["live"], expected)
    text = json.dumps(report, indent=2, default=str)
    (args.out / "gpu_check.json").write_text(text + "\n")
    print(text)
    return 1 if report["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
