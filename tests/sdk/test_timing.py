"""fusionedge.timing, the one timing method: block order, warm-up, what is timed, statistics.

A fake clock stands in for time.perf_counter wherever a figure is checked, so nothing
here depends on how fast the machine is.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from fusionedge import timing
from fusionedge.timing import (
    BLOCK,
    batch_of_one,
    interleave,
    latency_stats,
    stats,
    timed_call,
    warm_up,
)


def recorder(order: list[tuple[str, int]], name: str, stages: dict[str, float] | None = None):
    """A call that logs (name, i) and returns {"inference": i} (or the given stages)."""

    def call(i: int) -> dict[str, float]:
        order.append((name, i))
        return dict(stages) if stages is not None else {"inference": float(i)}

    return call


def fake_clock(monkeypatch: pytest.MonkeyPatch, ticks: list[float], log: list[str] | None = None):
    """Replaces the clock fusionedge.timing reads with one returning ticks in turn."""
    it = iter(ticks)

    def perf_counter() -> float:
        if log is not None:
            log.append("clock")
        return next(it)

    monkeypatch.setattr(timing, "time", SimpleNamespace(perf_counter=perf_counter))


def test_blocks_alternate_and_warmup_calls_run_in_them_but_are_dropped() -> None:
    order: list[tuple[str, int]] = []
    calls = {"a": recorder(order, "a"), "b": recorder(order, "b"), "c": recorder(order, "c")}
    times = interleave(calls, repeats=5, warmup=3, block=2)
    # 8 calls each, in blocks of 2: a0 a1 b0 b1 c0 c1 a2 a3 b2 b3 ...
    blocks = [range(0, 2), range(2, 4), range(4, 6), range(6, 8)]
    assert order == [(n, i) for block in blocks for n in "abc" for i in block]
    kept = [3.0, 4.0, 5.0, 6.0, 7.0]
    assert times == {name: {"inference": kept} for name in "abc"}


def test_block_is_capped_at_repeats_and_defaults_to_block() -> None:
    order: list[tuple[str, int]] = []
    interleave({"a": recorder(order, "a"), "b": recorder(order, "b")}, repeats=2, warmup=3)
    # BLOCK (25) is more than the 2 repeats: blocks of 2 over the 5 calls.
    assert BLOCK > 2
    assert [n for n, _ in order] == ["a", "a", "b", "b", "a", "a", "b", "b", "a", "b"]
    order.clear()
    interleave({"a": recorder(order, "a"), "b": recorder(order, "b")}, repeats=60)
    assert [n for n, _ in order[: 2 * BLOCK + 1]] == ["a"] * BLOCK + ["b"] * BLOCK + ["a"]


def test_every_stage_a_call_reports_is_collected() -> None:
    order: list[tuple[str, int]] = []
    stages = {"preprocess": 2.0, "inference": 3.0}
    times = interleave({"a": recorder(order, "a", stages)}, repeats=3, warmup=1)
    assert times == {"a": {"preprocess": [2.0] * 3, "inference": [3.0] * 3}}


def test_stats_of_known_values() -> None:
    values = [float(v) for v in range(1, 101)]  # 1 .. 100
    figures = stats(values)
    assert set(figures) == {"mean_ms", "p50_ms", "p95_ms", "p99_ms"}
    assert figures["mean_ms"] == pytest.approx(50.5)
    # numpy's linear interpolation: index q/100 * 99 into the sorted values.
    assert figures["p50_ms"] == pytest.approx(50.5)
    assert figures["p95_ms"] == pytest.approx(95.05)
    assert figures["p99_ms"] == pytest.approx(99.01)
    assert stats([4.0, 1.0, 3.0, 2.0], percentiles=(50,)) == {"mean_ms": 2.5, "p50_ms": 2.5}


def test_latency_stats_reads_one_stage_after_the_warmup() -> None:
    def call(offset: float):
        return lambda i: {"inference": offset + i, "other": -1.0}

    figures = latency_stats({"x": call(0.0), "y": call(100.0)}, repeats=4, warmup=2)
    # Calls 2..5 are kept: x -> 2, 3, 4, 5; y -> 102 .. 105.
    assert figures["x"]["p50_ms"] == pytest.approx(3.5)
    assert figures["y"]["mean_ms"] == pytest.approx(103.5)
    narrow = latency_stats({"x": call(0.0)}, repeats=4, stage="other", percentiles=(50, 95))
    assert narrow == {"x": {"mean_ms": -1.0, "p50_ms": -1.0, "p95_ms": -1.0}}


def test_timed_call_times_run_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[str] = []
    fake_clock(monkeypatch, [10.0, 10.25], events)

    def inputs_for(i: int) -> int:
        events.append(f"inputs {i}")
        return i * 2

    def run(x: int) -> None:
        events.append(f"run {x}")

    call = timed_call(inputs_for, run, stage="model")
    assert call(3) == {"model": pytest.approx(250.0)}
    # The inputs are made before the clock starts; the run sits between the two readings.
    assert events == ["inputs 3", "clock", "run 6", "clock"]


def test_batch_of_one_gives_every_candidate_the_same_row() -> None:
    inputs = {"image": np.arange(6).reshape(3, 2), "present": np.array([[1], [0], [1]], bool)}
    one = batch_of_one(inputs)
    assert one(1)["image"].tolist() == [[2, 3]]
    assert one(4)["image"].tolist() == [[2, 3]]  # wraps around after 3 samples
    assert one(2)["present"].shape == (1, 1)


def test_warm_up_runs_each_round_and_returns_the_median(monkeypatch: pytest.MonkeyPatch) -> None:
    order: list[tuple[str, int]] = []
    # Three rounds lasting 5, 1 and 2 s: the median is 2.
    fake_clock(monkeypatch, [0.0, 5.0, 5.0, 6.0, 6.0, 8.0])
    round_s = warm_up({"a": recorder(order, "a"), "b": recorder(order, "b")}, rounds=3)
    assert order == [("a", 0), ("b", 0), ("a", 1), ("b", 1), ("a", 2), ("b", 2)]
    assert round_s == pytest.approx(2.0)
    order.clear()
    fake_clock(monkeypatch, [0.0, 1.0])
    warm_up({"a": recorder(order, "a")}, rounds=0)  # still one round, to size repeats
    assert order == [("a", 0)]


def test_precision_latency_runs_sessions_in_blocks_not_call_by_call() -> None:
    # export/precision.py once alternated the sessions call by call, which RESULTS.md
    # measured as distorting p50; it must time through the blocks above.
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from fusionedge.arrays import SampleArrays
    from fusionedge.export.precision import interleaved_latency

    order: list[str] = []

    class Session:
        def __init__(self, name: str) -> None:
            self.name = name

        def run(self, names: list[str], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
            assert names == ["scores"] and len(feed["present"]) == 1
            order.append(self.name)
            return [np.zeros((1, 2), np.float32)]

    samples = SampleArrays(
        ids=["a", "b", "c"],
        tokens=np.zeros((3, 4), np.int64),
        present=np.ones((3, 1), bool),
        targets=np.zeros(3, np.int64),
    )
    sessions = {"fp32": Session("fp32"), "int8": Session("int8")}
    latency = interleaved_latency(sessions, samples, repeats=30, warmup=5)
    assert order == ["fp32"] * 25 + ["int8"] * 25 + ["fp32"] * 10 + ["int8"] * 10
    assert set(latency) == {"fp32", "int8"}
    assert all(set(v) == {"p50_ms", "p95_ms"} for v in latency.values())


def test_laps_close_each_stage_at_the_next_lap(monkeypatch) -> None:
    import fusionedge.timing as timing

    clock = iter([10.0, 12.34, 12.4, 15.0])
    monkeypatch.setattr(timing.time, "perf_counter", lambda: next(clock))
    report: dict[str, float] = {"earlier": 1.0}
    laps = timing.Laps(into=report)
    laps.lap("decode")
    laps.lap("train")
    laps.lap("export")
    assert report == {"earlier": 1.0, "decode": 2.3, "train": 0.1, "export": 2.6}
    assert laps.seconds is report
