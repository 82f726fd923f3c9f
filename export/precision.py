"""int8 and fp16 copies of an export, measured next to fp32 before they are kept.

Each copy is written to a temporary name, run through ONNX Runtime beside the fp32 file
on real samples (accuracy on the data set's val split, else test, and batch-1 latency
measured interleaved, sample by sample in one loop, so both see the same machine load),
and moved into place only when its metric drops by at most MAX_DROP_POINTS (or when the
caller forces it). The measurements go into the export report either way.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fusionedge.arrays import SampleArrays, load_arrays
from fusionedge.export.quantize import Int8Options, convert_fp16, quantize_int8
from fusionedge.manifest import read_manifest
from fusionedge.metrics import primary_metric, task_metrics
from fusionedge.spec import ModelSpec

log = logging.getLogger(__name__)

MAX_DROP_POINTS = 1.0
FP16_TOLERANCE = 1e-2
LATENCY_REPEATS = 200
LATENCY_WARMUP = 20
# One intra-op thread for the latency figures: batch-1 runs of models this small gain
# little from more, and one thread keeps the comparison steady on a shared machine.
LATENCY_THREADS = 1
EVAL_SPLITS = ("val", "test", "train")
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


class PrecisionRefused(RuntimeError):
    """A lower-precision copy lost too much; it was not written. `report` holds the figures."""

    def __init__(self, message: str, report: dict[str, Any]) -> None:
        super().__init__(message)
        self.report = report


def copy_path(out: Path, precision: str) -> Path:
    """model.onnx -> model.int8.onnx / model.fp16.onnx, beside it."""
    return out.with_name(f"{out.stem}.{precision}.onnx")


# ---------------------------------------------------------------------- samples


def split_arrays(
    data: Path, spec: ModelSpec, splits: Sequence[str], limit: int | None = None, seed: int = 0
) -> tuple[str, SampleArrays]:
    """The first non-empty split of splits, decoded.

    With a limit, that many records are drawn at random (seeded) before decoding:
    manifests are often ordered by class, so the first records would not do.
    """
    manifest = read_manifest(data)
    for split in splits:
        records = manifest.split(split)
        if limit is not None and len(records) > limit:
            index = np.random.default_rng(seed).choice(len(records), limit, replace=False)
            records = [records[i] for i in sorted(index)]
        if records:
            return split, load_arrays(records, spec, manifest.path)
    raise ValueError(f"{manifest.path}: no samples in any of the splits {list(splits)}")


# ---------------------------------------------------------------------- running


def open_session(path: Path, providers: Sequence[str], threads: int = 0):
    """An ONNX Runtime session with the Predictor's options, on exactly these providers."""
    import onnxruntime as ort

    from fusionedge.runtime.sessions import session_options

    options = session_options(threads)
    options.log_severity_level = 3  # the CPU provider's fp16 fallback warns per node
    return ort.InferenceSession(str(path), options, providers=list(providers))


def run_scores(session, samples: SampleArrays, batch: int = 64) -> np.ndarray:
    inputs = samples.inputs()
    return np.concatenate(
        [
            session.run(["scores"], {k: v[i : i + batch] for k, v in inputs.items()})[0]
            for i in range(0, len(samples), batch)
        ]
    )


def metric_points(spec: ModelSpec, samples: SampleArrays, scores: np.ndarray) -> tuple[str, float]:
    """The task's primary metric in points where higher is better.

    Classification: accuracy (or macro F1 for multilabel) x 100. Regression: the MAE as a
    percentage of the targets' standard deviation, negated, so that a "drop" means the
    same thing for every task.
    """
    name, _ = primary_metric(spec.task)
    value = float(task_metrics(spec.task, samples.targets, scores)[name])
    if spec.task == "regression":
        spread = float(np.std(samples.targets)) or 1.0
        return "-mae_pct_of_target_std", -100.0 * value / spread
    return name, 100.0 * value


def interleaved_latency(
    sessions: dict[str, Any],
    samples: SampleArrays,
    repeats: int = LATENCY_REPEATS,
    warmup: int = LATENCY_WARMUP,
) -> dict[str, dict[str, float]]:
    """Batch-1 latency per session, p50/p95 in ms.

    The sessions take turns on the same sample, and who goes first rotates every round,
    so that load from other processes and cache effects fall on all of them alike.
    """
    inputs = samples.inputs()
    names = list(sessions)
    times: dict[str, list[float]] = {name: [] for name in names}
    for i in range(warmup + repeats):
        one = {k: v[i % len(samples) : i % len(samples) + 1] for k, v in inputs.items()}
        for name in names[i % len(names) :] + names[: i % len(names)]:
            start = time.perf_counter()
            sessions[name].run(["scores"], one)
            if i >= warmup:
                times[name].append((time.perf_counter() - start) * 1e3)
    return {
        name: {
            "p50_ms": round(float(np.percentile(t, 50)), 4),
            "p95_ms": round(float(np.percentile(t, 95)), 4),
        }
        for name, t in times.items()
    }


def compare(
    fp32: Path,
    copy: Path,
    precision: str,
    spec: ModelSpec,
    split: str,
    samples: SampleArrays,
    providers: Sequence[str],
    repeats: int,
) -> dict[str, Any]:
    """Accuracy, score agreement and interleaved latency of copy next to fp32."""
    sessions = {
        "fp32": open_session(fp32, providers, LATENCY_THREADS),
        precision: open_session(copy, providers, LATENCY_THREADS),
    }
    got = {name: s.get_providers()[0] for name, s in sessions.items()}
    scores = {name: run_scores(s, samples) for name, s in sessions.items()}
    points = {name: metric_points(spec, samples, s) for name, s in scores.items()}
    latency = interleaved_latency(sessions, samples, repeats)
    return {
        "provider": got[precision],
        "split": split,
        "n": len(samples),
        "metric": points["fp32"][0],
        "fp32": round(points["fp32"][1], 3),
        precision: round(points[precision][1], 3),
        "drop_points": round(points["fp32"][1] - points[precision][1], 3),
        "max_abs_diff_scores": float(np.abs(scores["fp32"] - scores[precision]).max()),
        "same_top1": float((scores["fp32"].argmax(1) == scores[precision].argmax(1)).mean()),
        "latency": {
            "batch": 1,
            "threads": LATENCY_THREADS,
            "repeats": repeats,
            "warmup": LATENCY_WARMUP,
            **latency,
        },
        "speedup_p50": round(latency["fp32"]["p50_ms"] / latency[precision]["p50_ms"], 3),
    }


# ---------------------------------------------------------------------- decisions


def place(tmp: Path, final: Path, entry: dict[str, Any], problems: list[str], force: bool) -> None:
    """Moves the copy into place unless there are problems (or force); records the outcome."""
    entry["accepted"] = not problems
    entry["forced"] = bool(problems) and force
    entry["problems"] = problems
    entry["path"] = None if problems and not force else str(final)
    if entry["path"]:
        os.replace(tmp, final)


def drop_problems(entry: dict[str, Any], precision: str, max_drop: float) -> list[str]:
    """[a sentence with the figures] when the copy lost more than max_drop points, else []."""
    if entry["drop_points"] <= max_drop:
        return []
    return [
        f"{entry['metric']} drops {entry['drop_points']:.2f} points ({entry['fp32']:.2f} "
        f"fp32 -> {entry[precision]:.2f} {precision} on {entry['n']} {entry['split']} "
        f"samples), more than the {max_drop:g} allowed"
    ]


def make_int8(
    fp32: Path,
    data: Path,
    spec: ModelSpec,
    force: bool = False,
    max_drop: float = MAX_DROP_POINTS,
    options: Int8Options | None = None,
    repeats: int = LATENCY_REPEATS,
) -> dict[str, Any]:
    """Quantises fp32 to model.int8.onnx beside it, calibrated on data's train split.

    Returns the report entry; "problems" lists why the copy was refused (then it is not
    written unless force).
    """
    options = options or Int8Options()
    final = copy_path(fp32, "int8")
    with temporary(final) as tmp:
        _, train = split_arrays(
            data, spec, ("train", "all"), options.calibration_samples, options.seed
        )
        facts = quantize_int8(fp32, tmp, train, options)
        split, samples = split_arrays(data, spec, EVAL_SPLITS)
        entry = {**facts, **compare(fp32, tmp, "int8", spec, split, samples, [CPU], repeats)}
        entry["bytes_fp32"] = fp32.stat().st_size
        entry["max_drop_points"] = max_drop
        place(tmp, final, entry, drop_problems(entry, "int8", max_drop), force)
    return entry


@contextlib.contextmanager
def temporary(final: Path) -> Iterator[Path]:
    """A hidden temporary name beside final, removed unless something moved it away."""
    tmp = final.with_name(f".{final.name}.tmp")
    try:
        yield tmp
    finally:
        tmp.unlink(missing_ok=True)


def cuda_offered() -> bool:
    """Whether this onnxruntime build lists CUDA (a session may still not get it)."""
    import onnxruntime as ort

    return CUDA in ort.get_available_providers()


def make_fp16(
    fp32: Path,
    data: Path | None,
    spec: ModelSpec,
    force: bool = False,
    max_drop: float = MAX_DROP_POINTS,
    tolerance: float = FP16_TOLERANCE,
    repeats: int = LATENCY_REPEATS,
) -> dict[str, Any]:
    """Converts fp32 to model.fp16.onnx beside it, for CUDA.

    The copy is compared with fp32 on CUDA when a session gets CUDA, else on CPU when the
    CPU provider can run it; if neither, it is written after the ONNX checker alone and
    the entry says that parity was not checked.
    """
    final = copy_path(fp32, "fp16")
    with temporary(final) as tmp:
        entry = convert_fp16(fp32, tmp)
        problems = check_fp16(entry, fp32, tmp, data, spec, max_drop, tolerance, repeats)
        place(tmp, final, entry, problems, force)
    return entry


def check_fp16(
    entry: dict[str, Any],
    fp32: Path,
    tmp: Path,
    data: Path | None,
    spec: ModelSpec,
    max_drop: float,
    tolerance: float,
    repeats: int,
) -> list[str]:
    """Adds the comparison against fp32 to entry; returns what is wrong with the copy."""
    entry["bytes_fp32"] = fp32.stat().st_size
    entry["tolerance"] = tolerance
    entry["max_drop_points"] = max_drop
    providers = runnable_providers(tmp)
    problems = []
    if data is None or not providers:
        entry["parity"] = "not checked: " + (
            "no data set" if data is None else "no execution provider here can run fp16"
        )
    else:
        split, samples = split_arrays(data, spec, EVAL_SPLITS)
        entry |= compare(fp32, tmp, "fp16", spec, split, samples, providers, repeats)
        if entry["provider"] != CUDA:
            entry["parity_note"] = (
                "checked on CPU: ONNX Runtime runs fp16 ops without CPU kernels through "
                "inserted fp32 casts, so CUDA results can differ slightly; CPU latency is "
                "no guide to CUDA latency"
            )
        if entry["max_abs_diff_scores"] > tolerance:
            problems.append(
                f"scores differ from fp32 by up to {entry['max_abs_diff_scores']:.3g}, more "
                f"than the fp16 tolerance {tolerance:g}"
            )
        problems += drop_problems(entry, "fp16", max_drop)
    return problems


def runnable_providers(path: Path) -> list[str]:
    """[CUDA, CPU] when a session really gets CUDA, [CPU] when only the CPU can run the
    file, [] when nothing here can."""
    for providers in ([CUDA, CPU], [CPU]) if cuda_offered() else ([CPU],):
        try:
            session = open_session(path, providers)
        except Exception as e:  # onnxruntime raises its own NotImplemented/Fail types
            log.info("%s does not load on %s: %s", path, providers, e)
            continue
        if session.get_providers()[0] == providers[0]:
            return providers
    return []


def add_copies(
    report: dict[str, Any],
    fp32: Path,
    data: Path | None,
    spec: ModelSpec,
    int8: bool = False,
    fp16: bool = False,
    force: bool = False,
    max_drop: float = MAX_DROP_POINTS,
) -> None:
    """Makes the requested copies of fp32, each entry going into report["int8"/"fp16"].

    Raises:
        ValueError: int8 without a data set to calibrate on.
        PrecisionRefused: after both copies were tried, when one was refused (not forced).
    """
    if int8 and data is None:
        raise ValueError("int8 quantisation calibrates on real training samples: pass --data")
    if int8:
        report["int8"] = make_int8(fp32, data, spec, force, max_drop)  # type: ignore[arg-type]
    if fp16:
        report["fp16"] = make_fp16(fp32, data, spec, force, max_drop)
    refused = [
        f"{p}: " + "; ".join(report[p]["problems"])
        for p in ("int8", "fp16")
        if p in report and report[p]["path"] is None
    ]
    if refused:
        raise PrecisionRefused(
            " | ".join(refused) + f". Not written (the fp32 file {fp32} and the export "
            "report, with these figures, are); pass --force to keep it anyway",
            report,
        )


def describe_copy(precision: str, entry: dict[str, Any]) -> str:
    """One line for the CLI: where the copy went and how it compares with fp32."""
    name = entry["path"] or f"{precision} copy NOT written"
    size = f"{entry['bytes'] / 1e6:.2f} MB, fp32 {entry['bytes_fp32'] / 1e6:.2f} MB"
    if "metric" not in entry:
        return f"{name} ({size}); {entry['parity']}"
    latency = entry["latency"]
    forced = " (kept by --force)" if entry["forced"] else ""
    return (
        f"{name}{forced} ({size}); {entry['metric']} {entry['fp32']:.2f} fp32 -> "
        f"{entry[precision]:.2f} {precision} ({entry[precision] - entry['fp32']:+.2f} points, "
        f"{entry['n']} {entry['split']} samples); batch-1 p50 "
        f"{latency['fp32']['p50_ms']:.3f} -> {latency[precision]['p50_ms']:.3f} ms "
        f"({entry['speedup_p50']:.2f}x) on {entry['provider']}"
    )
