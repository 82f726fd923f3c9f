"""Latency per stage of a fusionedge model in ONNX Runtime (numpy + onnxruntime, no torch).

    predictor = Predictor.from_path("model.onnx", threads=1)
    report = run_bench(predictor, synthetic_inputs(predictor), BenchOptions())

Each call of the pipeline is timed in three stages, as `Predictor.predict_batch` runs
them: preprocess (Predictor.prepare on raw inputs, then stack), inference (Predictor.run)
and postprocess (make_results). A baseline (PyTorch eager, from fusionedge.cli.benchmark) can run
on the same prepared inputs, alternating with the runtime in blocks of calls
(fusionedge.timing), so drift in clock speed or background load hits both alike and the
ratio is fair.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fusionedge.contract import OUTPUT_NAMES
from fusionedge.runtime.camera import Frame
from fusionedge.runtime.predictor import Predictor
from fusionedge.runtime.result import make_results
from fusionedge.spec import ModelSpec
from fusionedge.timing import Call, interleave, stats, timed_call, warm_up

log = logging.getLogger(__name__)

# Call i -> the model inputs it runs on (the same for every backend at the same i).
BatchFor = Callable[[int], dict[str, np.ndarray]]

STAGES = ("preprocess", "inference", "postprocess", "total")
# What a live app hands over: a camera frame, about a second of microphone PCM at a rate
# the model does not take (so resampling is part of the cost), and a short text.
CAMERA_SHAPE = (480, 640, 3)
MIC_RATE, MIC_RATE_ALT = 48000, 44100
TEXTS = ("seven", "show me the number three", "red", "a dog barking", "play it again")
SYNTHETIC_POOL = 32
DATA_POOL = 256
# Auto repeats stay in this range whatever the model costs: p99 needs about 100 samples
# to mean anything, and a tiny model should not spin for minutes.
MIN_REPEATS, MAX_REPEATS = 10, 2000


@dataclass(frozen=True)
class BenchOptions:
    """What to measure and for how long.

    Attributes:
        batches: Batch sizes, each measured on its own.
        repeats: Timed calls per batch size; None picks them so that all batch sizes
            together take about `seconds`.
        seconds: Time budget of the timed calls when repeats is None.
        warmup: Untimed calls per batch size before timing (first runs allocate).
        threads: ONNX Runtime intra-op threads (and PyTorch's, for a baseline); 0 leaves
            each library's default.
        providers: "auto", "cpu", "cuda" or provider names, as for the Predictor.
        spinning: Let idle ONNX Runtime threads spin (its default).
        data: A data set folder to take real samples from; None for synthetic inputs.
        split: The data set split to take samples from.
        seed: Seed of the synthetic inputs.
    """

    batches: tuple[int, ...] = (1, 8, 32)
    repeats: int | None = None
    seconds: float = 3.0
    warmup: int = 5
    threads: int = 0
    providers: str = "auto"
    spinning: bool = True
    data: Path | None = None
    split: str = "test"
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.batches or any(
            isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in self.batches
        ):
            raise ValueError(f"batches: expected positive integers, got {self.batches!r}")
        if self.repeats is not None and self.repeats < 1:
            raise ValueError(f"repeats: expected at least 1, got {self.repeats}")
        if not self.seconds > 0:
            raise ValueError(f"seconds: expected a positive number, got {self.seconds}")
        if self.warmup < 0:
            raise ValueError(f"warmup: expected 0 or more, got {self.warmup}")
        if self.threads < 0:
            raise ValueError(f"threads: expected 0 (library default) or more, got {self.threads}")


def parse_batches(text: str, flag: str = "--batch") -> tuple[int, ...]:
    """ "1,8,32" -> (1, 8, 32), in the order given, duplicates dropped.

    Raises:
        ValueError: anything but comma-separated positive integers.
    """
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        sizes = ()
    if not sizes or any(b < 1 for b in sizes):
        raise ValueError(
            f"{flag}: expected comma-separated positive integers like 1,8,32, got {text!r}"
        )
    return tuple(dict.fromkeys(sizes))


# ---------------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class BenchInputs:
    """A pool of samples the calls cycle through.

    Attributes:
        description: What the samples are, for the report.
        raw: Keyword arguments of Predictor.prepare, one per sample (arrays or file paths).
        prepared: The same samples prepared once: what every backend's model runs on.
    """

    description: str
    raw: list[dict[str, Any]]
    prepared: list[dict[str, np.ndarray | None]]

    def indices(self, i: int, batch: int) -> list[int]:
        """The samples of call i at this batch size (consecutive, wrapping around)."""
        return [(i * batch + j) % len(self.raw) for j in range(batch)]


def synthetic_inputs(
    predictor: Predictor, count: int = SYNTHETIC_POOL, seed: int = 0
) -> BenchInputs:
    """Seeded raw inputs as a live app has them: 640x480 BGR frames, ~1 s of PCM at a rate
    that needs resampling, a short text (each only where the model takes it)."""
    spec = predictor.spec
    rng = np.random.default_rng(seed)
    rate = MIC_RATE if spec.audio is None or spec.audio.sample_rate != MIC_RATE else MIC_RATE_ALT
    raw = []
    for k in range(count):
        sample: dict[str, Any] = {}
        if spec.image is not None:
            sample["image"] = rng.integers(0, 256, CAMERA_SHAPE, dtype=np.uint8)
            sample["color_order"] = "bgr"
        if spec.audio is not None:
            sample["audio"] = (0.1 * rng.standard_normal(rate)).astype(np.float32)
            sample["sample_rate"] = rate
        if spec.text is not None:
            sample["text"] = TEXTS[k % len(TEXTS)]
        raw.append(sample)
    parts = {
        "image": f"{CAMERA_SHAPE[1]}x{CAMERA_SHAPE[0]} BGR frames",
        "audio": f"1 s of PCM at {rate} Hz",
        "text": "short texts",
    }
    description = "synthetic: " + ", ".join(parts[m] for m in spec.modalities)
    return BenchInputs(description, raw, [predictor.prepare(**r) for r in raw])


def random_batch(predictor: Predictor, n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """n random samples in the model-input layout (every modality present), for timing and
    for checks that need inputs but no meaning."""
    rng = np.random.default_rng(seed)
    vocab = predictor.spec.text.tokenizer.vocab_size if predictor.spec.text else 1
    out = {}
    for name, (dtype, shape) in predictor.input_layout().items():
        if dtype is np.uint8:
            out[name] = rng.integers(0, 256, (n, *shape), dtype=np.uint8)
        elif dtype is np.int64:
            out[name] = rng.integers(0, vocab, (n, *shape)).astype(np.int64)
        elif dtype is np.bool_:
            out[name] = np.ones((n, *shape), bool)
        else:
            out[name] = (0.1 * rng.standard_normal((n, *shape))).astype(np.float32)
    return out


def data_inputs(
    predictor: Predictor, data: str | Path, split: str = "test", count: int = DATA_POOL
) -> BenchInputs:
    """Real samples of a data set's split: file paths for the preprocess stage (so it
    decodes them as `fusionedge predict` does), decoded once for the model inputs.

    Raises:
        ValueError: the split has no samples, or its samples have none of the model's inputs.
    """
    # Inside the function: fusionedge.evaluation decodes media (cv2), which importing the
    # runtime must not load. Labels are not needed to time a model.
    from fusionedge.evaluation import pick_split

    manifest, _, records = pick_split(data, (split,), count, require_labels=False)
    raw = [{m: getattr(r, m) for m in predictor.spec.modalities if r.has(m)} for r in records]
    if not any(raw):
        raise ValueError(
            f"{manifest.path}: the {split!r} samples have none of the model's inputs "
            f"{list(predictor.spec.modalities)}"
        )
    description = f"{len(raw)} samples of the {split!r} split of {manifest.path}"
    return BenchInputs(description, raw, [predictor.prepare(**r) for r in raw])


def load_inputs(predictor: Predictor, options: BenchOptions) -> BenchInputs:
    """The data set's samples when options.data is set, synthetic inputs otherwise."""
    if options.data is not None:
        return data_inputs(predictor, options.data, options.split)
    return synthetic_inputs(predictor, min(SYNTHETIC_POOL, max(options.batches)), options.seed)


# ---------------------------------------------------------------------------------- calls


def pipeline_call(predictor: Predictor, inputs: BenchInputs, batch: int) -> Call:
    """The runtime's whole path on raw inputs, timed per stage (as Predictor._predict)."""
    spec: ModelSpec = predictor.spec
    top_k = predictor.options.top_k

    def call(i: int) -> dict[str, float]:
        raw = [inputs.raw[k] for k in inputs.indices(i, batch)]
        t0 = time.perf_counter()
        arrays = predictor.stack([predictor.prepare(**r) for r in raw])
        t1 = time.perf_counter()
        scores, embedding = predictor.run(arrays)
        t2 = time.perf_counter()
        make_results(spec, scores, embedding, arrays["present"], {}, top_k)
        t3 = time.perf_counter()
        return {
            "preprocess": (t1 - t0) * 1e3,
            "inference": (t2 - t1) * 1e3,
            "postprocess": (t3 - t2) * 1e3,
            "total": (t3 - t0) * 1e3,
        }

    return call


def prepared_batches(predictor: Predictor, inputs: BenchInputs, batch: int) -> BatchFor:
    """Call i -> the model inputs of call i, stacked from the samples prepared once."""
    return lambda i: predictor.stack([inputs.prepared[k] for k in inputs.indices(i, batch)])


def inference_call(predictor: Predictor, batch_for: BatchFor) -> Call:
    """Predictor.run alone on ready model inputs."""
    return timed_call(batch_for, predictor.run)


# ---------------------------------------------------------------------------------- bench


def bench_batch(
    predictor: Predictor,
    inputs: BenchInputs,
    batch: int,
    options: BenchOptions,
    baseline: tuple[str, Callable[[BatchFor], Call]] | None = None,
) -> dict[str, Any]:
    """One batch size: stages, throughput and (with a baseline) its figures and ratios."""
    calls = {"runtime": pipeline_call(predictor, inputs, batch)}
    pair: dict[str, Call] = {}
    if baseline is not None:
        # The ratio compares model compute alone on both sides: the runtime's inference
        # right after its own preprocessing would start with the caches full of image and
        # audio buffers, which the baseline (given ready inputs) never pays.
        name, make_call = baseline
        prepared = prepared_batches(predictor, inputs, batch)
        pair = {"runtime": inference_call(predictor, prepared), name: make_call(prepared)}
    round_s = warm_up({**calls, **{f"pair_{k}": v for k, v in pair.items()}}, options.warmup)
    repeats = options.repeats
    if repeats is None:
        budget = options.seconds / len(options.batches)
        repeats = int(np.clip(budget / max(round_s, 1e-9), MIN_REPEATS, MAX_REPEATS))
    times = interleave(calls, repeats)
    stages = {stage: stats(times["runtime"][stage]) for stage in STAGES}
    out: dict[str, Any] = {
        "repeats": repeats,
        "stages": stages,
        # Mean-based: samples per second over the timed calls as a whole.
        "throughput": {
            "inference_samples_per_s": batch * 1e3 / stages["inference"]["mean_ms"],
            "total_samples_per_s": batch * 1e3 / stages["total"]["mean_ms"],
        },
    }
    if pair:
        name = baseline[0]
        paired = interleave(pair, repeats)
        model, other = stats(paired["runtime"]["inference"]), stats(paired[name]["inference"])
        model["samples_per_s"] = batch * 1e3 / model["mean_ms"]
        other["samples_per_s"] = batch * 1e3 / other["mean_ms"]
        out["runtime_model"] = model
        out[name] = other
        out.update(speedups(model, other))
    return out


def overhead(predictor: Predictor, repeats: int, seed: int = 0) -> dict[str, Any]:
    """The live turn and the whole predict path against the model alone, batch 1,
    interleaved in blocks.

    All three get what a live app has (a 640x480 BGR frame, 1 s of PCM at a microphone
    rate the model does not take, a short text). `live_turn` is LiveRunner.step as the
    live loop runs it: the frame prepared on arrival (on the camera's capture thread in
    a real loop) and the audio resampled block by block as it entered the source.
    `predict` prepares everything on the call. The bare session.run gets the samples
    already prepared and stacked. overhead_ratio (live turn) and predict_ratio are the
    p50 ratios to the bare run: what preparation left on the path, checks and results
    cost on top of the model.
    """
    inputs = synthetic_inputs(predictor, min(SYNTHETIC_POOL, 8), seed)
    ready = [predictor.stack([p]) for p in inputs.prepared]
    raw = inputs.raw
    turn, frame_for = live_turn(predictor, raw)
    calls = {
        "live_turn": timed_call(frame_for, turn),
        "predict": timed_call(lambda i: raw[i % len(raw)], lambda r: predictor.predict(**r)),
        "session_run": timed_call(lambda i: ready[i % len(ready)], bare_run(predictor)),
    }
    warm_up(calls, 5)
    times = interleave(calls, repeats)
    figures = {k: stats(times[k]["inference"]) for k in calls}
    model = figures["session_run"]["p50_ms"]
    return {
        "inputs": inputs.description,
        "repeats": repeats,
        **figures,
        "overhead_ratio": figures["live_turn"]["p50_ms"] / model,
        "predict_ratio": figures["predict"]["p50_ms"] / model,
    }


def bare_run(predictor: Predictor) -> Callable[[dict[str, np.ndarray]], Any]:
    """The model alone: session.run (or a split model's encoders and head) on inputs
    already prepared, with no checks."""
    if predictor.split is not None:
        return predictor.split.run
    session, names = predictor.session, list(OUTPUT_NAMES)
    return lambda arrays: session.run(names, arrays)


def live_turn(
    predictor: Predictor, raw: list[dict[str, Any]]
) -> tuple[Callable[[Frame | None], Any], Callable[[int], Frame | None]]:
    """A LiveRunner's step and, for call i, the frame it takes: raw's frames, prepared as
    the runner's camera thread prepares them, stamped now; the first sample's audio
    written to an audio source in 20 ms blocks, as a microphone delivers it."""
    from fusionedge.runtime.audio_sources import AudioSource
    from fusionedge.runtime.live import LiveOptions, LiveRunner

    first, audio = raw[0], None
    if "audio" in first:
        rate, pcm = first["sample_rate"], first["audio"]
        audio = AudioSource(rate, capacity_s=2.0)  # fed here, never started
        audio.ring_at(predictor.spec.audio.sample_rate)
        block, now = rate // 50, time.monotonic_ns()
        for end in range(block, len(pcm) + 1, block):
            audio.write(pcm[end - block : end], now - (len(pcm) - end) * 10**9 // rate)
    # The inputs are written once and reused for minutes: staleness is not measured here.
    options = LiveOptions(stale_ms=3_600_000.0)
    runner = LiveRunner(predictor, audio=audio, text=first.get("text"), options=options)
    prepare = runner.frame_preparer
    frames = [(r["image"], prepare(r["image"])) for r in raw if "image" in r]

    def frame_for(i: int) -> Frame | None:
        if not frames:
            return None
        image, prepared = frames[i % len(frames)]
        return Frame(image, time.monotonic_ns(), i, prepared, prepare)

    return runner.step, frame_for


def speedups(runtime: dict[str, float], baseline: dict[str, float]) -> dict[str, float]:
    """How many times lower the runtime's latency is than the baseline's, per percentile."""
    return {f"speedup_p{q}": baseline[f"p{q}_ms"] / runtime[f"p{q}_ms"] for q in (50, 95)}


def thread_info(predictor: Predictor, requested: int) -> dict[str, Any]:
    """Intra-op threads asked for and used (0 means ONNX Runtime's default of one thread
    per core, reported as the cores this process may run on), and whether idle ones spin."""
    option = predictor.session.get_session_options().intra_op_num_threads
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "requested": requested,
        "intra_op": option or cores,
        "default": option == 0,
        "spinning": predictor.options.spinning,
    }


def run_bench(
    predictor: Predictor,
    inputs: BenchInputs,
    options: BenchOptions,
    baseline: tuple[str, Callable[[BatchFor], Call]] | None = None,
) -> dict[str, Any]:
    """Every batch size of options; the top-level figures are for batch 1 (or the smallest).

    Args:
        predictor: The open model.
        inputs: The samples to cycle through.
        options: Batch sizes, repeats, warm-up.
        baseline: (name, factory): the factory gets each call's model inputs and returns a
            call timed as {"inference": ms}, run alternately with the runtime's.

    Returns:
        {"model", "inputs", "providers", "threads", "warmup", "repeats", "batch", "runtime"
        (the batch's inference stage; with a baseline, the inference measured in turns
        with it), "batches": {"1": {"repeats", "stages", "throughput", ...}, ...}} and,
        with a baseline, its figures under its name, "runtime_model" per batch, and
        "speedup_p50" / "speedup_p95" at top level and per batch; always "overhead" and
        "overhead_ratio": Predictor.predict on camera-sized inputs against the bare
        session.run on the same inputs prepared, batch 1, interleaved (see overhead).
    """
    batches = {
        str(b): bench_batch(predictor, inputs, b, options, baseline) for b in options.batches
    }
    head = str(1 if 1 in options.batches else min(options.batches))
    report: dict[str, Any] = {
        "model": str(predictor.path),
        "inputs": inputs.description,
        "providers": predictor.providers,
        "threads": thread_info(predictor, options.threads),
        "warmup": options.warmup,
        "repeats": {b: v["repeats"] for b, v in batches.items()},
        "batch": int(head),
        "runtime": batches[head]["stages"]["inference"],
        "batches": batches,
    }
    live = overhead(predictor, batches[head]["repeats"], options.seed)
    report["overhead"] = live
    report["overhead_ratio"] = live["overhead_ratio"]
    if baseline is not None:
        # Side by side with the baseline, "runtime" is the model compute measured in turns
        # with it (the stages stay under "batches").
        name = baseline[0]
        report["runtime"] = batches[head]["runtime_model"]
        report[name] = batches[head][name]
        report.update(speedups(report["runtime"], report[name]))
    return report
