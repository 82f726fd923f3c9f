"""Latency of several candidates measured side by side: the one timing method of fusionedge.

    calls = {"fp32": timed_call(batch_of_one(inputs), run_fp32),
             "int8": timed_call(batch_of_one(inputs), run_int8)}
    figures = latency_stats(calls, repeats=200, warmup=20)  # name -> mean_ms, p50_ms, ...

A call is a function of the call index i returning milliseconds by stage name. The
candidates run in alternating blocks of BLOCK calls (interleave): alternating makes drift
in clock speed or background load hit every candidate alike, and blocks rather than
single calls keep each candidate's working set in the caches and its threads awake, as
in an application that runs one model back to back. Measured on the demo model
(benchmarks/RESULTS.md): call by call, every ONNX Runtime call started with PyTorch's
working set in the caches, p50 2.5 ms against 1.1 ms in blocks of 25 (PyTorch 14.6
against 6.4 ms, its threads meeting ONNX Runtime's spinning ones). Standard library and
numpy only, so the runtime, export and the CLI modules can all share it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np

# One call i -> milliseconds by stage name.
Call = Callable[[int], dict[str, float]]
T = TypeVar("T")

BLOCK = 25  # calls per candidate before the next one takes its turn (see interleave)
PERCENTILES = (50, 95, 99)
STAGE = "inference"  # the stage timed_call reports unless told otherwise


def timed_call(inputs_for: Callable[[int], T], run: Callable[[T], Any], stage: str = STAGE) -> Call:
    """Call i: inputs_for(i) untimed (slicing, stacking), then run on them timed.

    Returns {stage: ms}. Whatever run does is in the figure (a numpy -> tensor hand-over,
    a device synchronisation), so put there exactly what a user's call would pay.
    """

    def call(i: int) -> dict[str, float]:
        inputs = inputs_for(i)
        t0 = time.perf_counter()
        run(inputs)
        return {stage: (time.perf_counter() - t0) * 1e3}

    return call


def batch_of_one(inputs: Mapping[str, np.ndarray]) -> Callable[[int], dict[str, np.ndarray]]:
    """Call i -> row i of every array (wrapping around), as a batch of 1.

    Every candidate gets the same sample at the same i, so none is timed on easier inputs.
    """
    count = len(next(iter(inputs.values())))

    def one(i: int) -> dict[str, np.ndarray]:
        k = i % count
        return {name: v[k : k + 1] for name, v in inputs.items()}

    return one


def interleave(
    calls: Mapping[str, Call], repeats: int, warmup: int = 0, block: int = BLOCK
) -> dict[str, dict[str, list[float]]]:
    """Runs the calls in alternating blocks of `block` calls each: name -> stage -> ms.

    Each candidate makes warmup + repeats calls (indices 0, 1, ...); the first `warmup`
    are run in the same blocks but not kept (first runs allocate and fill caches).
    block=1 is call-by-call alternation, which the docstring above explains is avoided.
    """
    times: dict[str, dict[str, list[float]]] = {name: {} for name in calls}
    block = max(1, min(block, repeats))
    total = warmup + repeats
    for start in range(0, total, block):
        for name, call in calls.items():
            for i in range(start, min(start + block, total)):
                stages = call(i)
                if i >= warmup:
                    for stage, ms in stages.items():
                        times[name].setdefault(stage, []).append(ms)
    return times


def stats(values: Sequence[float], percentiles: Sequence[int] = PERCENTILES) -> dict[str, float]:
    """mean_ms and p<q>_ms for each q of percentiles, of milliseconds."""
    out = {"mean_ms": float(np.mean(values))}
    for q, value in zip(percentiles, np.percentile(values, percentiles), strict=True):
        out[f"p{q}_ms"] = float(value)
    return out


def latency_stats(
    calls: Mapping[str, Call],
    repeats: int,
    warmup: int = 0,
    block: int = BLOCK,
    stage: str = STAGE,
    percentiles: Sequence[int] = PERCENTILES,
) -> dict[str, dict[str, float]]:
    """interleave, then stats of one stage per candidate: name -> {"mean_ms", "p50_ms", ...}."""
    times = interleave(calls, repeats, warmup, block)
    return {name: stats(t[stage], percentiles) for name, t in times.items()}


def warm_up(calls: Mapping[str, Call], rounds: int) -> float:
    """Runs `rounds` untimed rounds of every call; returns the median seconds of one round,
    for sizing repeats to a time budget (the first round allocates and is no guide)."""
    durations = []
    for i in range(max(rounds, 1)):
        t0 = time.perf_counter()
        for call in calls.values():
            call(i)
        durations.append(time.perf_counter() - t0)
    return float(np.median(durations))


class Laps:
    """Wall-clock seconds of the stages of a long job, one after another:
    `laps.lap("train")` closes the stage that began at the previous lap (or at creation).
    `seconds` maps each stage to its duration, rounded to 0.1 s, in order."""

    def __init__(self, into: dict[str, float] | None = None) -> None:
        self.seconds: dict[str, float] = {} if into is None else into
        self._clock = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.seconds[stage] = round(now - self._clock, 1)
        self._clock = now
