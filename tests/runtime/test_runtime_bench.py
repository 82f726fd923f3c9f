"""The runtime benchmark (no torch): report structure and consistency, never speed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from support import write_dataset

from fusionedge.runtime import Predictor
from fusionedge.runtime.bench import (
    MAX_REPEATS,
    MIN_REPEATS,
    STAGES,
    BenchOptions,
    data_inputs,
    parse_batches,
    run_bench,
    synthetic_inputs,
)
from fusionedge.timing import interleave

PERCENTILE_KEYS = {"mean_ms", "p50_ms", "p95_ms", "p99_ms"}


def check_stats(figures: dict[str, float]) -> None:
    assert set(figures) >= PERCENTILE_KEYS
    assert 0 <= figures["p50_ms"] <= figures["p95_ms"] <= figures["p99_ms"]


def check_batch(batch: int, figures: dict, repeats: int) -> None:
    assert figures["repeats"] == repeats
    assert set(figures["stages"]) == set(STAGES)
    for stage in STAGES:
        check_stats(figures["stages"][stage])
    stages = figures["stages"]
    assert stages["inference"]["p50_ms"] > 0
    # Each call's total is its three stages end to end, so the means add up too.
    parts = sum(stages[s]["mean_ms"] for s in ("preprocess", "inference", "postprocess"))
    assert stages["total"]["mean_ms"] == pytest.approx(parts, rel=1e-6)
    throughput = figures["throughput"]
    assert throughput["inference_samples_per_s"] == pytest.approx(
        batch * 1e3 / stages["inference"]["mean_ms"]
    )
    assert throughput["total_samples_per_s"] == pytest.approx(
        batch * 1e3 / stages["total"]["mean_ms"]
    )
    assert throughput["inference_samples_per_s"] >= throughput["total_samples_per_s"] > 0


@pytest.mark.parametrize(
    ("text", "expected"), [("1,8,32", (1, 8, 32)), ("4", (4,)), ("8, 1,8", (8, 1))]
)
def test_parse_batches(text: str, expected: tuple[int, ...]) -> None:
    assert parse_batches(text) == expected


@pytest.mark.parametrize("text", ["x", "", "0", "1,-2", "1,,8", "1.5", "8;16"])
def test_parse_batches_rejects_bad_values(text: str) -> None:
    message = f"--batch: expected comma-separated positive integers like 1,8,32, got {text!r}"
    with pytest.raises(ValueError) as e:
        parse_batches(text)
    assert str(e.value) == message


@pytest.mark.parametrize(
    ("field", "value"),
    [("batches", ()), ("batches", (1, 0)), ("repeats", 0), ("seconds", 0.0), ("warmup", -1)],
)
def test_options_reject_bad_values(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        BenchOptions(**{field: value})  # type: ignore[arg-type]


def test_interleave_alternates_blocks_of_calls_and_drops_warmup() -> None:
    order: list[tuple[str, int]] = []

    def call(name: str):
        def run(i: int) -> dict[str, float]:
            order.append((name, i))
            return {"inference": float(i)}

        return run

    times = interleave({"a": call("a"), "b": call("b")}, repeats=3, warmup=2, block=2)
    blocks = [range(0, 2), range(2, 4), range(4, 5)]
    assert order == [(n, i) for block in blocks for n in ("a", "b") for i in block]
    assert times == {"a": {"inference": [2.0, 3.0, 4.0]}, "b": {"inference": [2.0, 3.0, 4.0]}}
    # block=1 is call-by-call alternation.
    order.clear()
    interleave({"a": call("a"), "b": call("b")}, repeats=2, block=1)
    assert order == [("a", 0), ("b", 0), ("a", 1), ("b", 1)]


def test_synthetic_inputs_are_live_sized_and_seeded(predictor: Predictor) -> None:
    inputs = synthetic_inputs(predictor, count=3, seed=1)
    assert len(inputs.raw) == len(inputs.prepared) == 3
    sample = inputs.raw[0]
    assert sample["image"].shape == (480, 640, 3) and sample["color_order"] == "bgr"
    assert sample["audio"].shape == (48000,) and sample["sample_rate"] == 48000
    assert sample["sample_rate"] != predictor.spec.audio.sample_rate  # resampling is timed
    assert isinstance(sample["text"], str) and sample["text"]
    layout = predictor.input_layout()
    assert inputs.prepared[0]["image"].shape == layout["image"][1]
    assert inputs.prepared[0]["audio"].shape == layout["audio"][1]
    same, other = synthetic_inputs(predictor, 3, seed=1), synthetic_inputs(predictor, 3, seed=2)
    assert np.array_equal(same.raw[2]["image"], inputs.raw[2]["image"])
    assert np.array_equal(same.raw[0]["audio"], sample["audio"])
    assert not np.array_equal(other.raw[0]["image"], sample["image"])


def test_bench_on_synthetic_inputs(predictor: Predictor) -> None:
    options = BenchOptions(batches=(1, 3), repeats=4, warmup=1, threads=1)
    report = run_bench(predictor, synthetic_inputs(predictor, 3), options)
    assert list(report["batches"]) == ["1", "3"]
    for batch in (1, 3):
        check_batch(batch, report["batches"][str(batch)], repeats=4)
    assert report["repeats"] == {"1": 4, "3": 4}
    assert report["batch"] == 1
    assert report["runtime"] == report["batches"]["1"]["stages"]["inference"]
    assert report["providers"] == ["CPUExecutionProvider"] == predictor.providers
    assert report["threads"] == {"requested": 1, "intra_op": 1, "default": False, "spinning": True}
    assert report["model"] == str(predictor.path)
    assert report["inputs"].startswith("synthetic")
    assert "torch" not in report and "speedup_p50" not in report
    json.dumps(report)  # the CLI prints it as is


def test_overhead_ratio_is_the_live_turn_against_the_bare_session(predictor: Predictor) -> None:
    options = BenchOptions(batches=(1,), repeats=3, warmup=0)
    report = run_bench(predictor, synthetic_inputs(predictor, 2), options)
    live = report["overhead"]
    assert live["repeats"] == 3
    for stage in ("live_turn", "predict", "session_run"):
        check_stats(live[stage])
    assert report["overhead_ratio"] == live["overhead_ratio"]
    assert live["overhead_ratio"] == pytest.approx(
        live["live_turn"]["p50_ms"] / live["session_run"]["p50_ms"]
    )
    assert live["predict_ratio"] == pytest.approx(
        live["predict"]["p50_ms"] / live["session_run"]["p50_ms"]
    )
    # Camera-sized, microphone-rate inputs whatever inputs the stages were timed on.
    assert "640x480 BGR frames" in live["inputs"] and "48000 Hz" in live["inputs"]
    from fusionedge.cli.benchmark import format_bench

    assert "overhead ratio" in format_bench(report)


def test_top_level_figures_are_the_smallest_batch_without_1(predictor: Predictor) -> None:
    options = BenchOptions(batches=(4, 2), repeats=2, warmup=0)
    report = run_bench(predictor, synthetic_inputs(predictor, 2), options)
    assert report["batch"] == 2
    assert report["runtime"] == report["batches"]["2"]["stages"]["inference"]


def test_auto_repeats_stay_in_range(predictor: Predictor) -> None:
    options = BenchOptions(batches=(1,), seconds=0.05, warmup=1)
    report = run_bench(predictor, synthetic_inputs(predictor, 1), options)
    assert MIN_REPEATS <= report["repeats"]["1"] <= MAX_REPEATS
    check_batch(1, report["batches"]["1"], report["repeats"]["1"])


def test_bench_on_data_set_samples(predictor: Predictor, runtime_data: Path) -> None:
    inputs = data_inputs(predictor, runtime_data, "test")
    assert len(inputs.raw) == 12  # 4 per class, 3 classes
    assert all(isinstance(r["image"], Path) and isinstance(r["audio"], Path) for r in inputs.raw)
    assert sum("text" in r for r in inputs.raw) == 6  # text on every other sample
    assert "'test' split" in inputs.description
    options = BenchOptions(batches=(1, 5), repeats=3, warmup=1)
    report = run_bench(predictor, inputs, options)
    for batch in (1, 5):
        check_batch(batch, report["batches"][str(batch)], repeats=3)


def test_empty_split_is_an_error(predictor: Predictor, tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "data", per_split={"train": 1})
    with pytest.raises(ValueError, match="'test' split is empty"):
        data_inputs(predictor, data, "test")


def test_a_baseline_runs_on_the_same_inputs_alternately(predictor: Predictor) -> None:
    seen: list[dict[str, tuple[int, ...]]] = []

    def factory(batch_for):
        def call(i: int) -> dict[str, float]:
            seen.append({k: v.shape for k, v in batch_for(i).items()})
            return {"inference": 5.0 + i % 2}

        return call

    options = BenchOptions(batches=(1, 2), repeats=3, warmup=1)
    report = run_bench(predictor, synthetic_inputs(predictor, 2), options, ("slow", factory))
    assert len(seen) == 2 * (1 + 3)
    assert {s["image"][0] for s in seen} == {1, 2}
    for batch in ("1", "2"):
        figures = report["batches"][batch]
        check_stats(figures["slow"])
        assert figures["slow"]["samples_per_s"] == pytest.approx(
            int(batch) * 1e3 / figures["slow"]["mean_ms"]
        )
        # The ratio is of model compute timed in turns with the baseline, not of the
        # inference stage (which follows the runtime's own preprocessing).
        check_stats(figures["runtime_model"])
        for q in (50, 95):
            assert figures[f"speedup_p{q}"] == pytest.approx(
                figures["slow"][f"p{q}_ms"] / figures["runtime_model"][f"p{q}_ms"]
            )
    assert report["slow"] == report["batches"]["1"]["slow"]
    assert report["runtime"] == report["batches"]["1"]["runtime_model"]
    assert report["speedup_p50"] == report["batches"]["1"]["speedup_p50"]


NO_TORCH = """
import contextlib, io, json, sys
from fusionedge.cli import main

out = io.StringIO()
with contextlib.redirect_stdout(out):
    code = main(["bench", sys.argv[1], "--json", "--batch", "1,2", "--repeats", "2",
                 "--warmup", "1", "--threads", "1", "--providers", "cpu"])
print("CHECK " + json.dumps({
    "code": code,
    "report": json.loads(out.getvalue()),
    "torch_modules": sorted(m for m in sys.modules if m == "torch" or m.startswith("torch.")),
}))
"""


def test_bench_without_vs_torch_never_imports_torch(model_path: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-I", "-c", NO_TORCH, str(model_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,  # not the repository: the installed package must be what is found
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [x for x in result.stdout.splitlines() if x.startswith("CHECK ")]
    assert len(lines) == 1, result.stdout
    check = json.loads(lines[0].removeprefix("CHECK "))
    assert check["code"] == 0
    assert check["torch_modules"] == []
    assert set(check["report"]["batches"]) == {"1", "2"}
    assert check["report"]["runtime"]["p50_ms"] > 0


def test_the_live_turn_bench_runs_on_every_input_prepared_as_predict_prepares_it(
    predictor: Predictor,
) -> None:
    from fusionedge.runtime.bench import live_turn

    raw = synthetic_inputs(predictor, 2).raw
    turn, frame_for = live_turn(predictor, raw)
    frame = frame_for(1)
    expected = predictor.prepare(**raw[1])["image"]
    assert frame is not None and np.array_equal(frame.prepared, expected)
    result = turn(frame)
    # Every modality took part: a stale or missing input would make the turn cheaper.
    assert all(result.present.values()), result.present
    assert np.isfinite(list(result.scores.values())).all()
