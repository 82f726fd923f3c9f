"""The live loop's latency on CUDA and on the CPU, for benchmarks/gpu_check.py.

A clip made from the data set's test samples (examples/make_clip.py: MJPG .avi + .wav)
plays through the capture stack a real camera and microphone use (CameraSource on the
file in real time, WavFileSource, both looping) into a LiveRunner, for `seconds` per
predictor: first the one on `provider` ("cuda"; "cpu" in a dry run), then ONNX Runtime
on the CPU for comparison. Both predictors are opened as `fusionedge run` opens one
(1 intra-op thread, no spinning; IO binding "auto", so on with CUDA).

Per predictor: each turn's LiveResult.latency_ms (capture_to_result, preprocess,
inference, total) as p50/p95, and what the loop adds to the model:
- added_ms: per turn, total - inference (the turn's work around Predictor.run: audio
  window copy, stacking, results; by construction the same as "preprocess");
- added_vs_bare_ms: the turn's total percentiles less bare session.run's, the latter
  measured by fusionedge.runtime.bench.overhead on the same predictor (which adds
  Predictor.run's checks and copies to the figure);
- overhead: bench.overhead itself (live turn, predict and bare session.run interleaved,
  synthetic 640x480 frames; overhead_ratio = live turn p50 / session.run p50).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CLIP_SAMPLES, CLIP_SECONDS, CLIP_FPS = 10, 1.0, 30.0
WARMUP_TURNS = 5  # the first turns (stream probing, first session runs) are not counted
FIELDS = ("capture_to_result", "preprocess", "inference", "total")


def make_clip(data: Path, out: Path) -> tuple[Path, Path]:
    """examples/make_clip.py on the test split: OUT/clip.avi and OUT/clip.wav."""
    spec = importlib.util.spec_from_file_location("make_clip", REPO / "examples" / "make_clip.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    stem = out / "clip"
    timeline = module.make_clip(data, stem, CLIP_SAMPLES, CLIP_SECONDS, CLIP_FPS, (240, 320), 16000)
    if not timeline:
        raise RuntimeError(f"{data}: no test sample with both an image and audio for the clip")
    return stem.with_suffix(".avi"), stem.with_suffix(".wav")


def open_predictor(model: Path, provider: str):
    from fusionedge.runtime import Predictor
    from fusionedge.runtime.bench import random_batch

    predictor = Predictor.from_path(
        model, providers=[provider], strict=True, threads=1, spinning=False
    )
    batch = random_batch(predictor, 1)
    for _ in range(10):  # first runs allocate (and on CUDA pick kernels)
        predictor.run(batch)
    return predictor


def live_turns(predictor, clip: tuple[Path, Path], seconds: float) -> list:
    """LiveResults of `seconds` of the looping clip, after WARMUP_TURNS turns."""
    from fusionedge.runtime.audio_sources import WavFileSource
    from fusionedge.runtime.camera import CameraSource
    from fusionedge.runtime.live import LiveRunner

    camera = CameraSource(str(clip[0]), loop=True).start()
    audio = WavFileSource(clip[1], loop=True).start()
    results: list = []
    try:
        LiveRunner(predictor, camera, audio).run(results.append, duration_s=seconds)
    finally:
        camera.stop()
        audio.stop()
    return results[WARMUP_TURNS:]


def percentiles(values: np.ndarray) -> dict[str, float]:
    return {"p50_ms": float(np.percentile(values, 50)), "p95_ms": float(np.percentile(values, 95))}


def summarize(results: list, seconds: float, bare: dict[str, float]) -> dict[str, Any]:
    """Per-turn figures of one live run; `bare` is session.run's stats from overhead."""
    if not results:
        return {"turns": 0}
    per = {k: np.array([r.latency_ms[k] for r in results]) for k in FIELDS}
    latency = {k: percentiles(v) for k, v in per.items()}
    total = latency["total"]
    return {
        "turns": len(results),
        "turns_per_s": len(results) / seconds,
        "fused_fraction": float(
            np.mean([r.present["image"] and r.present["audio"] for r in results])
        ),
        "dropped_frames": results[-1].dropped_frames,
        "overflows": results[-1].overflows,
        "latency_ms": latency,
        "added_ms": percentiles(per["total"] - per["inference"]),
        "added_from_capture_ms": percentiles(per["capture_to_result"] - per["inference"]),
        "added_vs_bare_ms": {q: total[q] - bare[q] for q in ("p50_ms", "p95_ms")},
    }


def live_on(model: Path, provider: str, clip: tuple[Path, Path], seconds: float, repeats: int):
    """The live run and bench.overhead of one predictor."""
    from fusionedge.runtime.bench import overhead

    with open_predictor(model, provider) as predictor:
        turns = live_turns(predictor, clip, seconds)
        costs = overhead(predictor, repeats)
        return {
            "providers": predictor.providers,
            "io_binding": predictor.io_binding,
            **summarize(turns, seconds, costs["session_run"]),
            "overhead": costs,
        }


def live_section(
    model: Path, data: Path, out: Path, provider: str, seconds: float, repeats: int
) -> dict[str, Any]:
    """{"clip", "seconds", "cuda": {...}, "cpu": {...}} ("cuda" runs on `provider`)."""
    clip = make_clip(data, out)
    report: dict[str, Any] = {"clip": str(clip[0]), "seconds": seconds}
    for name, on in (("cuda", provider), ("cpu", "cpu")):
        report[name] = live_on(model, on, clip, seconds, repeats)
    return report


def live_failures(live: dict[str, Any], expected: str) -> list[str]:
    """Names of the live checks that failed: the provider, and fused results at all."""
    failures = []
    for name in ("cuda", "cpu"):
        run = live[name]
        want = expected if name == "cuda" else "CPUExecutionProvider"
        if run["providers"][0] != want or run["turns"] == 0 or run["fused_fraction"] < 0.5:
            failures.append(f"live_{name}")
    return failures
