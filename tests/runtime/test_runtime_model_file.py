"""Opening files that are not fusionedge models: each gets a ModelFileError that says why."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from fusionedge.cli import main
from fusionedge.contract import SPEC_KEY
from fusionedge.runtime import ModelFileError, Predictor
from fusionedge.runtime.info import model_info
from fusionedge.spec import SCHEMA_VERSION


def identity_model(path: Path, metadata: dict[str, str] | None = None) -> Path:
    """A valid ONNX model from another tool: y = x."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "identity",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    for key, value in (metadata or {}).items():
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def rewrite_spec(src: Path, dst: Path, edit) -> Path:
    """Copies a fusionedge model with its spec JSON changed by edit(dict)."""
    model = onnx.load(str(src))
    (prop,) = [p for p in model.metadata_props if p.key == SPEC_KEY]
    spec = json.loads(prop.value)
    edit(spec)
    prop.value = json.dumps(spec)
    onnx.save(model, str(dst))
    return dst


def open_both(path: Path) -> list[ModelFileError]:
    """Predictor and model_info must both refuse the file; returns their errors."""
    errors = []
    for opener in (lambda: Predictor.from_path(path, providers="cpu"), lambda: model_info(path)):
        with pytest.raises(ModelFileError) as info:
            opener()
        assert str(path) in str(info.value)
        errors.append(info.value)
    return errors


def test_onnx_without_fusionedge_metadata_names_the_missing_key(tmp_path: Path) -> None:
    path = identity_model(tmp_path / "identity.onnx", {"author": "someone"})
    for error in open_both(path):
        message = str(error)
        assert f"no '{SPEC_KEY}' metadata" in message
        assert "['author']" in message  # what the file does have
        assert "fusionedge export" in message


def test_a_newer_schema_version_asks_for_an_upgrade(model_path: Path, tmp_path: Path) -> None:
    def bump(spec: dict) -> None:
        spec["schema_version"] = SCHEMA_VERSION + 1

    path = rewrite_spec(model_path, tmp_path / "newer.onnx", bump)
    for error in open_both(path):
        message = str(error)
        assert f"schema_version {SCHEMA_VERSION + 1}" in message
        assert "upgrade fusionedge" in message
        assert error.__cause__ is not None  # chained from the SpecError


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda s: s.update(colour_space="hsv"), r"colour_space: unknown key"),
        (lambda s: s["audio"].update(sample_rate="fast"), r"audio\.sample_rate: expected an int"),
        (lambda s: s.pop("labels"), r"labels"),
    ],
    ids=["unknown key", "wrong type", "missing key"],
)
def test_a_malformed_spec_names_the_key(model_path: Path, tmp_path: Path, edit, expected) -> None:
    path = rewrite_spec(model_path, tmp_path / "malformed.onnx", edit)
    for error in open_both(path):
        assert "fusionedge spec cannot be read" in str(error)
        assert re.search(expected, str(error)), str(error)


def test_metadata_that_is_not_json_is_refused(tmp_path: Path) -> None:
    path = identity_model(tmp_path / "notjson.onnx", {SPEC_KEY: "{not json"})
    for error in open_both(path):
        assert "must be JSON" in str(error)


def test_random_bytes_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "random.onnx"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    for error in open_both(path):
        assert "cannot load it as a model" in str(error)


def test_an_empty_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "empty.onnx"
    path.write_bytes(b"")
    open_both(path)


def test_safetensors_and_json_renamed_onnx_are_refused(tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    weights = tmp_path / "weights.onnx"
    save_file({"w": np.ones((4, 4), np.float32)}, str(weights))
    spec_json = tmp_path / "spec.onnx"
    spec_json.write_text(json.dumps({"modalities": ["image"], "labels": ["a", "b"]}))
    for path in (weights, spec_json):
        for error in open_both(path):
            assert "cannot load it as a model" in str(error)


def test_a_missing_path_raises_file_not_found(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "model.onnx"
    with pytest.raises(FileNotFoundError, match="nowhere"):
        Predictor.from_path(missing)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        model_info(missing)
    # A folder is a model only when it holds a split model's parts.
    with pytest.raises(ModelFileError, match="not a split fusionedge model"):
        Predictor.from_path(tmp_path)


def test_cli_reports_a_bad_model_file_in_one_line(tmp_path: Path, capsys) -> None:
    path = identity_model(tmp_path / "identity.onnx")
    assert main(["info", str(path)]) == 2
    assert main(["predict", str(path), "--text", "x"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2
    assert err[0].startswith("fusionedge info: error:") and SPEC_KEY in err[0]
    assert err[1].startswith("fusionedge predict: error:") and SPEC_KEY in err[1]


def test_the_exported_model_opens(model_path: Path) -> None:
    info = model_info(model_path)
    assert info["spec"]["schema_version"] == SCHEMA_VERSION
    assert info["labels"] == ["blue", "green", "red"]
    with Predictor.from_path(model_path, providers="cpu") as p:
        assert p.spec.modalities == ("image", "audio", "text")
        assert p.spec.labels == tuple(info["labels"])
