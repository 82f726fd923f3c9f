"""int8 and fp16 copies of an export, measured next to fp32 before they are kept.

Each copy is written to a temporary name, run through ONNX Runtime beside the fp32 file
on real samples (accuracy on the data set's val split, else test, and batch-1 latency
measured in alternating blocks of calls by fusionedge.timing, so both see the same machine
load without one's working set taking the other's caches), and moved into place only when
its metric drops by at most MAX_DROP_POINTS (or when the caller forces it). The
measurements go into the export report either way.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fusionedge.arrays import SampleArrays

# metric_points and split_arrays are core's; imported by name, they also stay reachable
# from here for benchmarks/int8_cpu.py.
from fusionedge.evaluation import RunFn, metric_points, score_batches, split_arrays
from fusionedge.export.quantize import Int8Options, convert_fp16, quantize_int8
from fusionedge.spec import ModelSpec
from fusionedge.timing import batch_of_one, latency_stats, timed_call

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


# ---------------------------------------------------------------------- running


def open_session(path: Path, providers: Sequence[str], threads: int = 0) -> Any:
    """A session as the Predictor opens it (runtime.sessions), on exactly these providers.

    This function is the export package's seam into the runtime (docs/ARCHITECTURE.md,
    "Known seams"): the copies are measured through the sessions a user's Predictor gets.

    Raises:
        ModelFileError (a ValueError): ONNX Runtime cannot build a session of the file on
            these providers.
    """
    from fusionedge.runtime.sessions import open_session as open_runtime_session
    from fusionedge.runtime.sessions import session_options

    options = session_options(threads)
    options.log_severity_level = 3  # the CPU provider's fp16 fallback warns per node
    return open_runtime_session(path, options, list(providers))


def session_scores(session: Any) -> RunFn:
    """A raw session as model inputs -> scores, for the scorer and the timer."""
    return lambda inputs: session.run(["scores"], inputs)[0]


def run_scores(session: Any, samples: SampleArrays, batch: int = 64) -> np.ndarray:
    """Scores [N, C] of samples through a raw session (fusionedge.evaluation.score_batches)."""
    return score_batches(session_scores(session), samples, batch_size=batch)


def interleaved_latency(
    sessions: dict[str, Any],
    samples: SampleArrays,
    repeats: int = LATENCY_REPEATS,
    warmup: int = LATENCY_WARMUP,
) -> dict[str, dict[str, float]]:
    """Batch-1 latency per session, p50/p95 in ms, rounded to 0.1 us.

    The sessions take turns in blocks of calls on the same samples (fusionedge.timing), so
    that load from other processes falls on all of them alike while each runs back to back
    as in an application.
    """
    one = batch_of_one(samples.inputs())
    calls = {name: timed_call(one, session_scores(s)) for name, s in sessions.items()}
    figures = latency_stats(calls, repeats, warmup, percentiles=(50, 95))
    return {
        name: {key: round(f[key], 4) for key in ("p50_ms", "p95_ms")} for name, f in figures.items()
    }


def compare_precisions(
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
        entry = {
            **facts,
            **compare_precisions(fp32, tmp, "int8", spec, split, samples, [CPU], repeats),
        }
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
        entry |= compare_precisions(fp32, tmp, "fp16", spec, split, samples, providers, repeats)
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
        except ValueError as e:
            # ModelFileError: runtime.sessions catches ONNX Runtime's own error types and
            # names the cause. Caught as its base class so that only open_session, the
            # documented seam, imports the runtime. A warning: the copy may then be kept
            # with its parity unchecked.
            log.warning("%s does not load on %s: %s", path, providers, e.__cause__ or e)
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
