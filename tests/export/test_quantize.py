"""int8 and fp16 copies of an export: contract, front end kept fp32, accuracy, refusal, CLI.

One tiny model is trained on the small real data set and exported once through the CLI
with --int8 --fp16; the tests read those files. Exports dominate the time (the dynamo
exporter), so only the refusal test exports a second time.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from support import tiny_config, write_dataset

from fusionedge.cli import main
from fusionedge.contract import DIGEST_KEY, GOLDEN_KEY, PRECISION_KEY
from fusionedge.evaluation import metric_points, split_arrays
from fusionedge.export.precision import PrecisionRefused, add_copies, copy_path
from fusionedge.export.quantize import (
    Int8Options,
    calibration_batches,
    drop_round_trips,
    frontend_nodes,
    model_metadata,
    nodes_under,
)
from fusionedge.export.run import export_run, report_path
from fusionedge.runtime import Predictor
from fusionedge.runtime.model_file import spec_from_metadata
from fusionedge.training.registry import AUDIO_ENCODERS
from fusionedge.training.trainer import train

FLOAT, FLOAT16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("quant_data"))


@pytest.fixture(scope="module")
def run(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("quant_run") / "run"
    threads = torch.get_num_threads()
    try:
        train(data, out, tiny_config("epochs=6"), progress=False)
    finally:
        torch.set_num_threads(threads)
    return out


@pytest.fixture(scope="module")
def exported(run: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, str]:
    """`fusionedge export RUN --out model.onnx --int8 --fp16`: (fp32 path, report, stdout)."""
    out = tmp_path_factory.mktemp("quant_cli") / "model.onnx"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(["export", str(run), "--out", str(out), "--int8", "--fp16"])
    assert code == 0, stdout.getvalue()
    return out, json.loads(report_path(out).read_text()), stdout.getvalue()


def load(path: Path) -> onnx.ModelProto:
    return onnx.load(str(path))


def io_types(model: onnx.ModelProto) -> dict[str, int]:
    return {v.name: v.type.tensor_type.elem_type for v in [*model.graph.input, *model.graph.output]}


def value_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every value: inputs, outputs, initializers and inferred inner values."""
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    graph = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*graph.value_info, *graph.output]}
    types |= io_types(inferred) | {i.name: i.data_type for i in graph.initializer}
    return types


def test_cli_writes_both_copies_and_reports_them(exported) -> None:
    out, report, stdout = exported
    int8, fp16 = copy_path(out, "int8"), copy_path(out, "fp16")
    assert int8 == out.with_name("model.int8.onnx") and int8.is_file()
    assert fp16 == out.with_name("model.fp16.onnx") and fp16.is_file()
    assert f"{int8} (" in stdout and f"{fp16} (" in stdout
    assert not [p.name for p in out.parent.iterdir() if p.name.endswith(".tmp")]
    entry = report["int8"]
    assert entry["path"] == str(int8) and entry["accepted"] and not entry["forced"]
    assert entry["bytes"] == int8.stat().st_size
    assert entry["calibration_samples"] == 48  # the whole train split: 16 per class
    assert entry["excluded_nodes"] == len(frontend_nodes(load(out))) > 0
    assert entry["split"] == "val" and entry["n"] == 18
    for name in ("fp32", "int8"):
        latency = entry["latency"][name]
        assert 0 < latency["p50_ms"] <= latency["p95_ms"]
    assert entry["speedup_p50"] == pytest.approx(
        entry["latency"]["fp32"]["p50_ms"] / entry["latency"]["int8"]["p50_ms"], rel=1e-2
    )
    assert report["fp16"]["path"] == str(fp16)


def test_int8_runs_in_the_predictor_with_qdq_nodes(exported, data: Path) -> None:
    out, report, _ = exported
    int8 = copy_path(out, "int8")
    ops = {n.op_type for n in load(int8).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert report["int8"]["quantized_nodes"] > 0
    with Predictor.from_path(out, providers="cpu") as p32, Predictor(int8) as p8:
        assert p8.spec == p32.spec
        _, samples = split_arrays(data, p8.spec, ["val"])
        s32, e32 = p32.run(samples.inputs())
        s8, e8 = p8.run(samples.inputs())
    assert s8.dtype == s32.dtype == np.float32 and s8.shape == s32.shape
    assert e8.shape == e32.shape
    # Close, not equal: int8 changes every score a little.
    assert np.abs(s8 - s32).max() < 0.1
    assert (s8.argmax(1) == s32.argmax(1)).mean() >= 0.9


def test_int8_accuracy_is_close_to_fp32(exported, data: Path) -> None:
    out, report, _ = exported
    entry = report["int8"]
    assert entry["metric"] == "accuracy"
    assert entry["fp32"] >= 90.0  # the tiny model learned the data set
    assert entry["drop_points"] <= 1.0 and entry["same_top1"] >= 0.9
    # The report's figures are what a user gets through the runtime.
    with Predictor(copy_path(out, "int8")) as predictor:
        _, samples = split_arrays(data, predictor.spec, ["val"])
        scores = predictor.run(samples.inputs())[0]
    assert metric_points(predictor.spec, samples, scores)[1] == pytest.approx(entry["int8"])


def test_frontend_has_no_qdq_around_it_in_int8(exported) -> None:
    out, _, _ = exported
    frontend = set(frontend_nodes(load(out)))
    assert {"Conv", "MatMul", "Log"} <= {
        n.op_type for n in load(out).graph.node if n.name in frontend
    }
    model = load(copy_path(out, "int8"))
    nodes = {n.name: n for n in model.graph.node}
    assert frontend <= set(nodes)
    made_by_dq = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    read_by_q = {i for n in model.graph.node if n.op_type == "QuantizeLinear" for i in n.input}
    for name in frontend:
        assert not made_by_dq & set(nodes[name].input), name
        assert not read_by_q & set(nodes[name].output), name
    types = value_types(model)
    for name in frontend:
        for value in [*nodes[name].input, *nodes[name].output]:
            assert types[value] in (FLOAT, onnx.TensorProto.INT64), (name, value)


def test_copies_keep_the_contract_and_add_precision(exported) -> None:
    out, _, _ = exported
    fp32 = load(out)
    for precision in ("int8", "fp16"):
        copy = load(copy_path(out, precision))
        # Each copy computes other scores and has other bytes: it is sealed with its own
        # golden cases and digest (export/integrity.py); the rest is the fp32 file's.
        own = (DIGEST_KEY, GOLDEN_KEY)
        kept = {k: v for k, v in model_metadata(copy).items() if k not in own}
        assert kept == {k: v for k, v in model_metadata(fp32).items() if k not in own} | {
            PRECISION_KEY: precision
        }
        for key in own:
            assert model_metadata(copy)[key] != model_metadata(fp32)[key]
        assert io_types(copy) == io_types(fp32)
        assert [i.name for i in copy.graph.input] == [i.name for i in fp32.graph.input]
        assert [o.name for o in copy.graph.output] == ["scores", "embedding"]
        spec = spec_from_metadata(model_metadata(copy), precision)
        assert spec == spec_from_metadata(model_metadata(fp32), "fp32")


def test_fp16_has_half_weights_fp32_io_and_a_fp32_frontend(exported) -> None:
    out, report, _ = exported
    model = load(copy_path(out, "fp16"))
    assert sum(i.data_type == FLOAT16 for i in model.graph.initializer) > 0
    assert set(io_types(model).values()) <= {
        FLOAT,
        onnx.TensorProto.UINT8,
        onnx.TensorProto.INT64,
        onnx.TensorProto.BOOL,
    }
    frontend = set(frontend_nodes(load(out)))
    nodes = [n for n in model.graph.node if n.name in frontend]
    assert len(nodes) == len(frontend)
    types = value_types(model)
    for node in nodes:
        for value in [*node.input, *node.output]:
            assert types[value] in (FLOAT, onnx.TensorProto.INT64), (node.name, value)
    # Heavy ops outside the front end do run in half precision.
    convs = [n for n in model.graph.node if n.op_type == "Conv" and n.name not in frontend]
    assert convs and all(types[n.output[0]] == FLOAT16 for n in convs)
    entry = report["fp16"]
    # This machine's CPU provider runs the fp16 file (falling back to fp32 kernels where
    # it has no fp16 ones), so parity is checked here too, with the fp16 tolerance.
    assert entry["max_abs_diff_scores"] <= entry["tolerance"]
    assert entry["drop_points"] <= 1.0


def test_refused_int8_leaves_no_file_and_a_report(run: Path, data: Path, tmp_path: Path) -> None:
    out = tmp_path / "model.onnx"
    # A negative allowance refuses even a lossless copy: the path under test is the refusal.
    with pytest.raises(PrecisionRefused, match=r"accuracy drops .* --force") as e:
        export_run(run, out, data, int8=True, max_drop=-1.0)
    assert out.is_file()
    assert not copy_path(out, "int8").exists()
    # The fp32 file was checked and kept: its model.json and card are written too.
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "model.card", "model.card.md", "model.json", "model.onnx", "model.report.json"
    ]  # fmt: skip
    entry = json.loads(report_path(out).read_text())["int8"]
    assert entry == e.value.report["int8"]
    assert entry["path"] is None and not entry["accepted"] and entry["problems"]
    assert entry["int8"] >= 0 and entry["latency"]["int8"]["p50_ms"] > 0


def test_force_keeps_a_refused_copy(exported, data: Path, tmp_path: Path) -> None:
    out, _, _ = exported
    fp32 = tmp_path / "model.onnx"
    shutil.copy(out, fp32)
    spec = spec_from_metadata(model_metadata(load(fp32)), fp32)
    report: dict = {}
    add_copies(report, fp32, data, spec, int8=True, fp16=True, force=True, max_drop=-1.0)
    for precision in ("int8", "fp16"):
        entry = report[precision]
        assert entry["forced"] and not entry["accepted"] and entry["problems"]
        assert entry["path"] == str(copy_path(fp32, precision))
        assert copy_path(fp32, precision).is_file()


def test_cli_refusal_exits_1_and_names_force(exported, monkeypatch, capsys) -> None:
    import fusionedge.export.run

    out, report, _ = exported
    refused = json.loads(json.dumps(report))
    refused["int8"].update(path=None, accepted=False, problems=["accuracy drops 3.00 points"])

    def export_run(*args, **kwargs):
        assert {k: kwargs[k] for k in ("int8", "fp16", "force")} == {
            "int8": True,
            "fp16": False,
            "force": False,
        }
        raise PrecisionRefused("int8: accuracy drops 3.00 points; pass --force", refused)

    monkeypatch.setattr(fusionedge.export.run, "export_run", export_run)
    assert main(["export", "RUN", "--out", str(out), "--int8"]) == 1
    printed = capsys.readouterr()
    assert "int8 copy NOT written" in printed.out and f"report: {report_path(out)}" in printed.out
    assert "error: int8: accuracy drops 3.00 points; pass --force" in printed.err


def test_int8_needs_a_data_set(exported, tmp_path: Path) -> None:
    out, _, _ = exported
    spec = spec_from_metadata(model_metadata(load(out)), out)
    with pytest.raises(ValueError, match="--data"):
        add_copies({}, out, None, spec, int8=True)


def test_calibration_covers_missing_modalities(exported, data: Path) -> None:
    out, _, _ = exported
    spec = spec_from_metadata(model_metadata(load(out)), out)
    _, train = split_arrays(data, spec, ["train"])
    batches = calibration_batches(train, Int8Options(calibration_samples=32))
    assert [len(b["present"]) for b in batches] == [16, 16, 16]
    own, dropped = batches[0], batches[2]
    # The data set's own gaps (text on every other sample) come first, as they are...
    assert own["present"][:, :2].all() and not own["present"][:, 2].all()
    # ...then the same samples again with more modalities marked missing, each kind of
    # placeholder included.
    assert not (dropped["present"] & ~own["present"]).any()
    assert (~dropped["present"][:, :2]).any(axis=0).all()
    for name in ("image", "audio", "tokens"):
        assert np.array_equal(dropped[name], own[name])


def test_frontend_found_by_module_in_every_audio_encoder(export_tiny) -> None:
    for name in AUDIO_ENCODERS.names():
        model = load(export_tiny(modalities=("audio",), audio_encoder=name).path)
        found = frontend_nodes(model)
        assert found == nodes_under(model, "encoders.audio.logmel"), name
        ops = {n.op_type for n in model.graph.node if n.name in set(found)}
        assert {"Conv", "MatMul", "Log"} <= ops, name


def test_frontend_nodes_need_the_exporters_metadata(exported) -> None:
    out, _, _ = exported
    model = load(out)
    for node in model.graph.node:
        del node.metadata_props[:]
    with pytest.raises(ValueError, match="log-mel front end"):
        frontend_nodes(model)
    # Without an audio input there is no front end to look for.
    next(i for i in model.graph.input if i.name == "audio").name = "not_audio"
    assert frontend_nodes(model) == []


def test_drop_round_trips_rewires_fp32_reads() -> None:
    from onnx import helper

    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["x"], ["h"], to=FLOAT16, name="to16"),
            helper.make_node("Cast", ["h"], ["x32"], to=FLOAT, name="to32a"),
            helper.make_node("Cast", ["h"], ["x32"], to=FLOAT, name="to32b"),
            helper.make_node("Relu", ["x32"], ["y"], name="relu"),
        ],
        "g",
        [helper.make_tensor_value_info("x", FLOAT, [2])],
        [helper.make_tensor_value_info("y", FLOAT, [2])],
    )
    model = helper.make_model(graph)
    assert drop_round_trips(model) == 1
    assert [(n.name, list(n.input)) for n in model.graph.node] == [("relu", ["x"])]
