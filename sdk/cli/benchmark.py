"""`fusionedge bench`: runtime latency per stage, optionally against PyTorch eager.

Like cli.py and quickstart.py this module reaches the runtime and (for --vs-torch only)
training, importing each when it runs: `fusionedge bench model.onnx` never loads torch.
The timing itself lives in fusionedge.runtime.bench; here are the PyTorch side and the
table the CLI prints.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from fusionedge.runtime.bench import BatchFor, BenchInputs, BenchOptions, Call
    from fusionedge.runtime.predictor import Predictor

log = logging.getLogger(__name__)

# Above this the PyTorch model is probably not the weights of the ONNX file.
PARITY_WARN = 1e-3


def torch_call(model: Any, device: Any = "cpu") -> Callable[[BatchFor], Call]:
    """A call factory for runtime.bench: PyTorch eager on each call's model inputs.

    The numpy -> tensor hand-over is timed with the forward pass, as Predictor.run
    includes its own; on CUDA the call waits for the GPU to finish.
    """
    import torch

    from fusionedge.timing import timed_call

    device = torch.device(device)

    def forward(arrays: dict[str, np.ndarray]) -> None:
        with torch.inference_mode():
            model(**{k: torch.from_numpy(v).to(device) for k, v in arrays.items()})
            if device.type == "cuda":
                torch.cuda.synchronize(device)

    return lambda batch_for: timed_call(batch_for, forward)


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[int]:
    """PyTorch's intra-op threads set to `threads` (0: left as they are), restored after;
    yields the count in use."""
    import torch

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def torch_parity(
    model: Any, predictor: Predictor, arrays: dict[str, np.ndarray], device: Any
) -> float:
    """Max |score difference| of the two backends on one batch: near 0 for the same weights."""
    import torch

    with torch.inference_mode():
        scores = model(**{k: torch.from_numpy(v).to(device) for k, v in arrays.items()})[0]
    runtime_scores = predictor.run(arrays)[0]
    return float(np.abs(scores.cpu().numpy() - runtime_scores).max())


def bench(
    model: str | Path, options: BenchOptions, vs_torch: str | Path | None = None
) -> dict[str, Any]:
    """Benchmarks an ONNX file (see runtime.bench.run_bench); with vs_torch, a run folder or
    checkpoint of the same weights, timed alternately in PyTorch eager.

    Raises:
        ModelFileError: the file is not a fusionedge model.
        FileNotFoundError: no model file, or no checkpoint in the run folder.
    """
    from fusionedge.runtime.bench import load_inputs, run_bench
    from fusionedge.runtime.predictor import Predictor

    with Predictor.from_path(
        model, providers=options.providers, threads=options.threads, spinning=options.spinning
    ) as predictor:
        inputs = load_inputs(predictor, options)
        if vs_torch is None:
            return run_bench(predictor, inputs, options)
        return bench_vs_torch(predictor, inputs, options, vs_torch)


def bench_vs_torch(
    predictor: Predictor, inputs: BenchInputs, options: BenchOptions, run: str | Path
) -> dict[str, Any]:
    """run_bench with PyTorch eager as the baseline, on the device the session runs on."""
    import torch

    from fusionedge.runtime.bench import prepared_batches, run_bench
    from fusionedge.training.checkpoint import load_model
    from fusionedge.training.torch_eval import resolve_checkpoint

    checkpoint = resolve_checkpoint(run)
    on_cuda = predictor.providers[0] == "CUDAExecutionProvider" and torch.cuda.is_available()
    device = torch.device("cuda" if on_cuda else "cpu")
    model = load_model(checkpoint, device)
    diff = torch_parity(model, predictor, prepared_batches(predictor, inputs, 1)(0), device)
    if diff > PARITY_WARN:
        log.warning(
            "%s and %s disagree (max |score difference| %.2e): are they the same weights?",
            checkpoint,
            predictor.path,
            diff,
        )
    with torch_threads(options.threads) as threads:
        report = run_bench(
            predictor, inputs, options, baseline=("torch", torch_call(model, device))
        )
    report["threads"]["torch"] = threads
    report["torch_checkpoint"] = str(checkpoint)
    report["torch_device"] = str(device)
    report["torch_max_abs_diff_scores"] = diff
    return report


def format_bench(report: dict[str, Any]) -> str:
    """The table `fusionedge bench` prints: stage x percentiles per batch size."""
    threads = report["threads"]
    intra = f"{threads['intra_op']}" + (" (ONNX Runtime default)" if threads["default"] else "")
    intra += "" if threads["spinning"] else ", not spinning"
    head = f"threads: intra-op {intra}"
    if "torch" in threads:
        head += f", torch {threads['torch']} ({report['torch_device']})"
    lines = [
        f"{report['model']} on {', '.join(report['providers'])}; {head}",
        f"inputs: {report['inputs']}; warm-up {report['warmup']} calls per batch size",
        f"  {'batch':>5}  {'stage':<13}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}"
        f"{'samples/s':>11}{'repeats':>9}",
    ]
    for batch, figures in report["batches"].items():
        lines += batch_rows(batch, figures)
    if "overhead" in report:
        live = report["overhead"]
        lines.append(
            f"live turn (batch 1, {live['inputs'].removeprefix('synthetic: ')}): p50 "
            f"{live['live_turn']['p50_ms']:.3f} ms with inputs prepared on arrival, bare "
            f"session.run {live['session_run']['p50_ms']:.3f} ms: overhead ratio "
            f"{report['overhead_ratio']:.2f}x; predict on the raw inputs "
            f"{live['predict']['p50_ms']:.3f} ms ({live['predict_ratio']:.2f}x) "
            "(interleaved in blocks)"
        )
    if "torch" in report:
        lines.append(
            f"batch {report['batch']}: PyTorch eager / runtime latency "
            f"{report['speedup_p50']:.1f}x at p50, {report['speedup_p95']:.1f}x at p95 "
            "(model compute on the same inputs, interleaved in blocks; max |score "
            f"difference| {report['torch_max_abs_diff_scores']:.1e})"
        )
    return "\n".join(lines)


def batch_rows(batch: str, figures: dict[str, Any]) -> list[str]:
    """One batch size's rows: the stages, then PyTorch and the ratios when measured."""

    def row(label: str, s: dict[str, float], rate: float | None = None) -> str:
        shown = f"{rate:>11.0f}" if rate is not None else " " * 11
        return f"{label:<13}{s['p50_ms']:>9.3f}{s['p95_ms']:>9.3f}{s['p99_ms']:>9.3f}{shown}"

    stages, throughput = figures["stages"], figures["throughput"]
    rates = {
        "inference": throughput["inference_samples_per_s"],
        "total": throughput["total_samples_per_s"],
    }
    rows = [row(stage, s, rates.get(stage)) for stage, s in stages.items()]
    if "torch" in figures:
        model = figures["runtime_model"]
        rows.append(row("runtime model", model, model["samples_per_s"]))
        rows.append(row("torch eager", figures["torch"], figures["torch"]["samples_per_s"]))
        rows.append(
            f"{'speedup':<13}{figures['speedup_p50']:>8.1f}x{figures['speedup_p95']:>8.1f}x"
        )
    first = f"  {batch:>5}  {rows[0]}{figures['repeats']:>9}"
    return [first] + [f"  {'':>5}  {r}".rstrip() for r in rows[1:]]
