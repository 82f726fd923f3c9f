"""`fusionedge bench` through the CLI entry point, against PyTorch on the same weights.

Structure and consistency only: speed claims belong in benchmarks/, not in tests.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support import train_and_export, write_dataset

from fusionedge.cli import main

FAST = ("--repeats", "3", "--warmup", "1", "--threads", "1", "--providers", "cpu")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with a tiny trained run (run/) and its export (model.onnx)."""
    root = tmp_path_factory.mktemp("bench")
    train_and_export(write_dataset(root / "data"), root)
    return root


def bench_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    assert main(["bench", *args, "--json", *FAST]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1, lines
    return json.loads(lines[0])


def test_bench_vs_torch_json(trained: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    threads = torch.get_num_threads()
    model, run = trained / "model.onnx", trained / "run"
    report = bench_json(capsys, str(model), "--vs-torch", str(run), "--batch", "1,4")
    assert torch.get_num_threads() == threads  # the bench restores PyTorch's setting

    for key in ("p50_ms", "p95_ms", "p99_ms"):
        assert report["runtime"][key] > 0 and report["torch"][key] > 0
    assert report["runtime"]["p50_ms"] <= report["runtime"]["p95_ms"] <= report["runtime"]["p99_ms"]
    assert report["speedup_p50"] == pytest.approx(
        report["torch"]["p50_ms"] / report["runtime"]["p50_ms"]
    )
    assert report["speedup_p95"] == pytest.approx(
        report["torch"]["p95_ms"] / report["runtime"]["p95_ms"]
    )
    assert set(report["batches"]) == {"1", "4"}
    for batch, figures in report["batches"].items():
        assert figures["repeats"] == 3
        assert set(figures["stages"]) == {"preprocess", "inference", "postprocess", "total"}
        assert figures["torch"]["p50_ms"] > 0
        assert figures["torch"]["samples_per_s"] == pytest.approx(
            int(batch) * 1e3 / figures["torch"]["mean_ms"]
        )
        assert figures["speedup_p50"] == pytest.approx(
            figures["torch"]["p50_ms"] / figures["runtime_model"]["p50_ms"]
        )
        assert figures["throughput"]["inference_samples_per_s"] > 0
    assert report["batches"]["1"]["torch"] == report["torch"]
    assert report["repeats"] == {"1": 3, "4": 3}
    assert report["providers"] == ["CPUExecutionProvider"]
    assert report["threads"] == {
        "requested": 1,
        "intra_op": 1,
        "default": False,
        "spinning": True,
        "torch": 1,
    }
    assert report["model"] == str(model)
    assert report["torch_checkpoint"] == str(run / "best.safetensors")
    assert report["torch_device"] == "cpu"
    assert report["torch_max_abs_diff_scores"] < 1e-4  # the same weights


def test_bench_table_on_data(trained: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = [str(trained / "model.onnx"), "--vs-torch", str(trained / "run")]
    args += ["--batch", "2", "--data", str(trained / "data"), *FAST]
    assert main(["bench", *args]) == 0
    out = capsys.readouterr().out
    assert "CPUExecutionProvider" in out and "intra-op 1" in out and "torch 1" in out
    assert "'test' split" in out
    for row in ("preprocess", "inference", "postprocess", "total", "torch eager", "speedup"):
        assert f" {row} " in out, row
    assert "PyTorch eager / runtime latency" in out


@pytest.mark.parametrize("batch", ["x", "0", "1,,8"])
def test_bad_batch_exits_2(trained: Path, capsys: pytest.CaptureFixture[str], batch: str) -> None:
    assert main(["bench", str(trained / "model.onnx"), "--batch", batch]) == 2
    err = capsys.readouterr().err
    assert err.strip() == (
        "fusionedge bench: error: --batch: expected comma-separated positive integers "
        f"like 1,8,32, got {batch!r}"
    )


def test_a_model_not_from_fusionedge_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    path = tmp_path / "other.onnx"
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9  # what this onnxruntime reads; onnx writes a newer one by default
    onnx.save(model, path)
    assert main(["bench", str(path), *FAST]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("fusionedge bench: error:") and "not exported by `fusionedge export`" in err
    )


def test_missing_checkpoint_exits_2(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [str(trained / "model.onnx"), "--vs-torch", str(tmp_path), *FAST]
    assert main(["bench", *args]) == 2
    assert "no checkpoint at" in capsys.readouterr().err


def test_quickstart_latency_keeps_its_keys(trained: Path) -> None:
    # compare_latency shares the bench's interleaving; the quickstart report must not change.
    from fusionedge.arrays import load_arrays
    from fusionedge.cli.quickstart import compare_latency
    from fusionedge.manifest import read_manifest
    from fusionedge.runtime import Predictor
    from fusionedge.training.checkpoint import load_model

    manifest = read_manifest(trained / "data")
    with Predictor.from_path(trained / "model.onnx", providers="cpu", threads=1) as predictor:
        samples = load_arrays(manifest.split("test")[:5], predictor.spec, manifest.path)
        model = load_model(trained / "run" / "best.safetensors")
        latency = compare_latency(model, predictor, samples, repeats=4, warmup=1)
    assert set(latency) == {
        "runtime_p50",
        "runtime_p95",
        "torch_p50",
        "torch_p95",
        "speedup_p50",
        "repeats",
        "batch",
        "torch_threads",
        "providers",
    }
    assert latency["speedup_p50"] == pytest.approx(latency["torch_p50"] / latency["runtime_p50"])
    assert latency["runtime_p50"] <= latency["runtime_p95"]
    assert latency["repeats"] == 4 and latency["batch"] == 1
    assert latency["providers"] == ["CPUExecutionProvider"]
