"""Which ONNX Runtime session options pay off for a fusionedge model, measured side by side.

    .venv/bin/python benchmarks/session_options.py MODEL.onnx [--data DIR] [--repeats 300]
        [--json]

Each comparison builds its sessions first and runs its variants on the same inputs in
alternation, so background load hits every variant alike; the ratios are the figures to
read. 1 and 2 time through fusionedge.timing: after 20 warm-up calls each, the variants
take turns in blocks of 25 calls, each running back to back as in an application; 3
alternates spinning on and off in 1 s blocks; 4 and 5 alternate their variants call by
call.

1. graph optimisation level (disable / basic / extended / all), batch 1 and 32, 1 thread;
2. intra-op threads (1 / 2 / default), batch 1 and 32;
3. spinning on / off with 2 threads while a capture thread decodes 640x480 JPEG frames at
   30 fps, as the live loop's camera thread does: the capture thread's decode time and
   lateness, and the model's latency;
4. load time from the .onnx file against a cached optimised graph (PredictorOptions.
   cache_dir);
5. the Predictor's input arrays allocated per call (stack) against a preallocated batch.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from fusionedge.runtime import Predictor
from fusionedge.runtime.bench import random_batch
from fusionedge.timing import interleave

RNG = np.random.default_rng(0)


def inputs_for(predictor: Predictor, batch: int, data: Path | None) -> dict[str, np.ndarray]:
    """The first `batch` decoded test samples (repeated to fill the batch when the split has
    fewer) when data is given, else random ones of the right layout."""
    if data is not None:
        from fusionedge.arrays import load_arrays
        from fusionedge.evaluation import pick_split

        manifest, _, records = pick_split(data, ["test"], limit=batch)
        arrays = load_arrays(records, predictor.spec, manifest.path).inputs()
        index = np.arange(batch) % len(records)
        return {k: v[index] for k, v in arrays.items()}
    return random_batch(predictor, batch)


def interleaved(
    variants: dict[str, Predictor], inputs: dict[str, np.ndarray], repeats: int, warmup: int = 20
) -> dict[str, dict[str, float]]:
    """p50/p95 ms of each variant's session run, the variants taking turns in blocks of 25
    calls (fusionedge.timing.interleave), after `warmup` calls each."""

    def call(predictor: Predictor):
        def run(_: int) -> dict[str, float]:
            t0 = time.perf_counter()
            predictor.session.run(["scores", "embedding"], inputs)
            return {"inference": (time.perf_counter() - t0) * 1e3}

        return run

    times = interleave({name: call(p) for name, p in variants.items()}, repeats, warmup)
    return {name: percentiles(t["inference"]) for name, t in times.items()}


def percentiles(values: list[float]) -> dict[str, float]:
    return {"p50_ms": float(np.percentile(values, 50)), "p95_ms": float(np.percentile(values, 95))}


def with_ratios(result: dict[str, dict[str, float]], baseline: str) -> dict[str, dict[str, float]]:
    """Adds each variant's p50 relative to the baseline's (>1: slower than the baseline)."""
    base = result[baseline]["p50_ms"]
    return {k: v | {"p50_vs_" + baseline: v["p50_ms"] / base} for k, v in result.items()}


def optimisation_levels(model: Path, data: Path | None, repeats: int) -> dict[str, Any]:
    variants = {
        level: Predictor.from_path(model, providers="cpu", threads=1, optimization=level)
        for level in ("disable", "basic", "extended", "all")
    }
    first = next(iter(variants.values()))
    return {
        f"batch_{b}": with_ratios(
            interleaved(variants, inputs_for(first, b, data), repeats // (1 + b // 8)), "all"
        )
        for b in (1, 32)
    }


def thread_counts(model: Path, data: Path | None, repeats: int) -> dict[str, Any]:
    variants = {
        f"threads_{n or 'default'}": Predictor.from_path(
            model, providers="cpu", threads=n, spinning=False
        )
        for n in (1, 2, 0)
    }
    first = next(iter(variants.values()))
    return {
        f"batch_{b}": with_ratios(
            interleaved(variants, inputs_for(first, b, data), repeats // (1 + b // 8)),
            "threads_1",
        )
        for b in (1, 32)
    }


class CaptureLoad:
    """A camera-like thread: decodes one 640x480 JPEG every 1/30 s; records decode times
    and how late each decode finished against its 33 ms slot."""

    def __init__(self, fps: float = 30.0) -> None:
        frame = np.clip(RNG.normal(128, 40, (480, 640, 3)), 0, 255).astype(np.uint8)
        self.jpeg = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 90])[1]
        self.period = 1.0 / fps
        self.decode_ms: list[float] = []
        self.late_ms: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        next_slot = time.perf_counter()
        while not self._stop.is_set():
            t0 = time.perf_counter()
            cv2.imdecode(self.jpeg, cv2.IMREAD_COLOR)
            t1 = time.perf_counter()
            self.decode_ms.append((t1 - t0) * 1e3)
            self.late_ms.append(max(0.0, (t1 - next_slot) * 1e3))
            next_slot += self.period
            self._stop.wait(max(0.0, next_slot - time.perf_counter()))

    def __enter__(self) -> CaptureLoad:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def spinning(model: Path, data: Path | None, seconds: float) -> dict[str, Any]:
    """2 intra-op threads, the model called back to back (a busy live loop) next to a
    30 fps capture thread, spinning on and off in alternating 1 s blocks."""
    cv2.setNumThreads(1)  # one decode thread, like a capture thread
    variants = {
        "spinning_on": Predictor.from_path(model, providers="cpu", threads=2, spinning=True),
        "spinning_off": Predictor.from_path(model, providers="cpu", threads=2, spinning=False),
    }
    inputs = inputs_for(next(iter(variants.values())), 1, data)
    out: dict[str, Any] = {}
    stats: dict[str, dict[str, list[float]]] = {
        k: {"model": [], "decode": [], "late": []} for k in variants
    }
    blocks = max(2, int(seconds))
    for block in range(blocks):
        name = list(variants)[block % 2]
        predictor = variants[name]
        with CaptureLoad() as capture:
            end = time.perf_counter() + 1.0
            while time.perf_counter() < end:
                t0 = time.perf_counter()
                predictor.session.run(["scores", "embedding"], inputs)
                stats[name]["model"].append((time.perf_counter() - t0) * 1e3)
        stats[name]["decode"] += capture.decode_ms[1:]
        stats[name]["late"] += capture.late_ms[1:]
    for name, s in stats.items():
        out[name] = {
            "model": percentiles(s["model"]) | {"calls_per_s": len(s["model"]) / (blocks / 2)},
            "capture_decode": percentiles(s["decode"]),
            "capture_late": percentiles(s["late"]),
        }
    return out


def load_time(model: Path, repeats: int = 10) -> dict[str, Any]:
    """Session creation from the .onnx against from a cached optimised graph, alternating."""
    times: dict[str, list[float]] = {"from_onnx": [], "from_cache": []}
    with tempfile.TemporaryDirectory() as cache:
        Predictor.from_path(model, providers="cpu", threads=1, cache_dir=cache)  # fills it
        for _ in range(repeats):
            t0 = time.perf_counter()
            Predictor.from_path(model, providers="cpu", threads=1)
            t1 = time.perf_counter()
            Predictor.from_path(model, providers="cpu", threads=1, cache_dir=cache)
            t2 = time.perf_counter()
            times["from_onnx"].append((t1 - t0) * 1e3)
            times["from_cache"].append((t2 - t1) * 1e3)
    return with_ratios({k: percentiles(v) for k, v in times.items()}, "from_onnx")


def preallocation(model: Path, repeats: int) -> dict[str, Any]:
    """Predictor.stack (new arrays per call) against filling a preallocated batch."""
    predictor = Predictor.from_path(model, providers="cpu", threads=1)
    sample = predictor.prepare(
        image=np.zeros((480, 640, 3), np.uint8),
        audio=np.zeros(predictor.spec.audio.num_samples, np.float32)
        if predictor.spec.audio
        else None,
        sample_rate=predictor.spec.audio.sample_rate if predictor.spec.audio else None,
        text="seven" if predictor.spec.text else None,
    )
    batch = predictor.stack([sample])
    times: dict[str, list[float]] = {"stack": [], "preallocated": [], "session_run": []}
    for _ in range(repeats):
        t0 = time.perf_counter()
        predictor.stack([sample])
        t1 = time.perf_counter()
        for j, m in enumerate(predictor.spec.modalities):
            batch[{"text": "tokens"}.get(m, m)][0] = sample[m]
            batch["present"][0, j] = True
        t2 = time.perf_counter()
        predictor.session.run(["scores", "embedding"], batch)
        t3 = time.perf_counter()
        times["stack"].append((t1 - t0) * 1e3)
        times["preallocated"].append((t2 - t1) * 1e3)
        times["session_run"].append((t3 - t2) * 1e3)
    return {k: percentiles(v) for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--data", type=Path, help="data set: real test samples as inputs")
    parser.add_argument("--repeats", type=int, default=300)
    parser.add_argument("--spin-seconds", type=float, default=6.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    report = {
        "model": str(args.model),
        "optimisation_level": optimisation_levels(args.model, args.data, args.repeats),
        "threads": thread_counts(args.model, args.data, args.repeats),
        "spinning_with_capture": spinning(args.model, args.data, args.spin_seconds),
        "load": load_time(args.model),
        "input_preallocation": preallocation(args.model, args.repeats),
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print_report(report)


def print_report(report: dict[str, Any]) -> None:
    for section in ("optimisation_level", "threads"):
        for batch, variants in report[section].items():
            print(f"{section}, {batch.replace('_', ' ')}:")
            for name, v in variants.items():
                ratio = next(x for k, x in v.items() if k.startswith("p50_vs_"))
                p50, p95 = v["p50_ms"], v["p95_ms"]
                print(f"  {name:<16}p50 {p50:7.3f} ms  p95 {p95:7.3f} ms  {ratio:5.2f}x")
    print("spinning, 2 threads, next to a 30 fps JPEG-decoding capture thread:")
    for name, v in report["spinning_with_capture"].items():
        model, decode, late = v["model"], v["capture_decode"], v["capture_late"]
        print(
            f"  {name:<14}model p50 {model['p50_ms']:.3f} ms ({model['calls_per_s']:.0f}/s)"
            f"  decode p50/p95 {decode['p50_ms']:.2f}/{decode['p95_ms']:.2f} ms"
            f"  late p95 {late['p95_ms']:.2f} ms"
        )
    print("session load:")
    for name, v in report["load"].items():
        print(f"  {name:<14}p50 {v['p50_ms']:.1f} ms")
    print("inputs per call:")
    for name, v in report["input_preallocation"].items():
        print(f"  {name:<14}p50 {v['p50_ms'] * 1e3:.1f} us")


if __name__ == "__main__":
    main()
