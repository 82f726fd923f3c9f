"""`fusionedge triton`: the repository it writes, checked without a server.

Every config.pbtxt is parsed with Triton's own ModelConfig protobuf (shipped in
tritonclient) and held to the ONNX file's inputs and outputs as ONNX Runtime reads them;
the ensemble's steps are held to the parts they call. The raw model's request handling
(serve_requests) is checked against the Predictor in-process; tests/e2e/test_triton.py
runs the same repository on a real tritonserver.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fusionedge.contract import SPEC_KEY
from fusionedge.runtime import Predictor
from fusionedge.runtime.triton_raw import RAW_INPUTS, serve_requests
from fusionedge.runtime.triton_repo import TritonOptions, write_repository

pb = pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="needs tritonclient")
text_format = pytest.importorskip("google.protobuf.text_format")

# ONNX Runtime's type names -> Triton's.
ORT_TO_TRITON = {
    "tensor(uint8)": "TYPE_UINT8",
    "tensor(float)": "TYPE_FP32",
    "tensor(int64)": "TYPE_INT64",
    "tensor(bool)": "TYPE_BOOL",
}


@pytest.fixture(scope="session")
def split_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained image + audio (log-mel front end) + text model, split."""
    import torch
    from support import tiny_spec

    from fusionedge.export.split import export_split
    from fusionedge.training.model import FusedModel

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("triton_split") / "model.split"
    export_split(FusedModel(tiny_spec()).eval(), folder)
    return folder


def read_config(folder: Path) -> Any:
    return text_format.Parse((folder / "config.pbtxt").read_text(), pb.ModelConfig())


def check_onnx_model(folder: Path, config: Any, max_batch: int) -> None:
    """A model for the ONNX Runtime backend agrees with its ONNX file."""
    import onnxruntime as ort

    session = ort.InferenceSession(folder / "1" / "model.onnx", providers=["CPUExecutionProvider"])
    assert config.platform == "onnxruntime_onnx"
    assert config.max_batch_size == max_batch
    assert config.HasField("dynamic_batching")
    for kind, found in (("input", session.get_inputs()), ("output", session.get_outputs())):
        tensors = getattr(config, kind)
        assert [t.name for t in tensors] == [a.name for a in found], kind
        for t, a in zip(tensors, found, strict=True):
            assert pb.DataType.Name(t.data_type) == ORT_TO_TRITON[a.type], (kind, t.name)
            graph = [d if isinstance(d, int) else -1 for d in a.shape[1:]]
            assert list(t.dims) == graph, (kind, t.name)
            assert not isinstance(a.shape[0], int), f"{t.name}: the batch axis must be dynamic"
    metadata = session.get_modelmeta().custom_metadata_map
    assert config.parameters[SPEC_KEY].string_value == metadata[SPEC_KEY]


def check_labels(folder: Path, config: Any, labels: list[str]) -> None:
    scores = next(o for o in config.output if o.name == "scores")
    assert scores.label_filename == "labels.txt"
    assert (folder / "labels.txt").read_text().splitlines() == labels


def test_single_file_repository(model_path: Path, tmp_path: Path) -> None:
    options = TritonOptions(name="av", max_batch=8, instances=2, device="gpu")
    report = write_repository(model_path, tmp_path, options)
    assert report["models"] == {"av": "onnxruntime", "av_raw": "python"}
    spec = Predictor.from_path(model_path, providers="cpu").spec
    config = read_config(tmp_path / "av")
    assert config.name == "av"
    check_onnx_model(tmp_path / "av", config, 8)
    check_labels(tmp_path / "av", config, list(spec.labels))
    [group] = config.instance_group
    assert (pb.ModelInstanceGroup.Kind.Name(group.kind), group.count) == ("KIND_GPU", 2)
    assert (tmp_path / "av" / "1" / "model.onnx").read_bytes() == model_path.read_bytes()


def test_raw_model_config(model_path: Path, tmp_path: Path) -> None:
    write_repository(model_path, tmp_path, TritonOptions(device="cpu"))
    folder = tmp_path / "model_raw"
    config = read_config(folder)
    assert config.backend == "python" and config.max_batch_size == 16
    assert [i.name for i in config.input] == list(RAW_INPUTS)  # image, audio, rate, text
    assert all(i.optional for i in config.input)
    types = {i.name: pb.DataType.Name(i.data_type) for i in config.input}
    assert types["text"] == "TYPE_STRING" and types["image"] == "TYPE_UINT8"
    assert [o.name for o in config.output] == ["label", "scores"]
    assert config.parameters["providers"].string_value == "cpu"
    assert (folder / "1" / "model.py").is_file() and (folder / "1" / "model.onnx").is_file()
    compile((folder / "1" / "model.py").read_text(), "model.py", "exec")


def test_split_repository_is_an_ensemble(split_model: Path, tmp_path: Path) -> None:
    report = write_repository(split_model, tmp_path, TritonOptions(max_batch=4))
    parts = ["audio_frontend", "image", "audio", "text", "fusion"]
    assert set(report["models"]) == {"model", "model_raw", *(f"model_{p}" for p in parts)}
    spec = Predictor.from_path(split_model, providers="cpu").spec
    for part in parts:
        folder = tmp_path / f"model_{part}"
        check_onnx_model(folder, read_config(folder), 4)
    check_labels(
        tmp_path / "model_fusion", read_config(tmp_path / "model_fusion"), list(spec.labels)
    )
    ensemble = read_config(tmp_path / "model")
    assert ensemble.platform == "ensemble" and ensemble.max_batch_size == 4
    assert (tmp_path / "model" / "1").is_dir()  # Triton wants the version folder
    check_ensemble_wiring(tmp_path, ensemble)
    assert (tmp_path / "model_raw" / "1" / "model.split" / "fusion.onnx").is_file()


def check_ensemble_wiring(repo: Path, ensemble: Any) -> None:
    """Each step's inputs exist when it runs and are its model's inputs, of the same
    type; the ensemble's outputs are produced by some step."""
    known = {t.name: t for t in ensemble.input}
    for step in ensemble.ensemble_scheduling.step:
        model = read_config(repo / step.model_name)
        inputs = {t.name: t for t in model.input}
        assert set(step.input_map) == set(inputs), step.model_name
        for inner, outer in step.input_map.items():
            assert outer in known, f"{step.model_name}: {outer} is not produced before it"
            assert known[outer].data_type == inputs[inner].data_type
        outputs = {t.name: t for t in model.output}
        assert set(step.output_map) <= set(outputs)
        known |= {outer: outputs[inner] for inner, outer in step.output_map.items()}
    for t in ensemble.output:
        assert t.name in known and list(known[t.name].dims) == list(t.dims)


def test_pbtxt_strings_survive_the_parser(tmp_path: Path) -> None:
    from fusionedge.runtime.triton_repo import to_pbtxt

    text = 'quote " backslash \\ newline \n tab \t ünïcode ✓ \x00'
    parsed = text_format.Parse(to_pbtxt({"name": text}), pb.ModelConfig())
    assert parsed.name == text


def test_serve_requests_match_the_predictor(model_path: Path, predictor: Predictor) -> None:
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (2, 31, 45, 3), dtype=np.uint8)  # not the model's size
    audio = (0.2 * rng.standard_normal((2, 11025))).astype(np.float32)
    requests = [
        {
            "image": image,
            "audio": audio,
            "sample_rate": np.full((2, 1), 22050, np.int32),
            "text": np.array([[b"red"], [b"blue"]], dtype=object),
        },
        {
            "image": None,
            "audio": None,
            "sample_rate": None,
            "text": np.array([[b"green"]], dtype=object),
        },
        {"image": None, "audio": audio[:1], "sample_rate": None, "text": None},  # no rate
    ]
    first, second, refused = serve_requests(predictor, requests)
    want = predictor.predict_batch(list(image), list(audio), ["red", "blue"], sample_rate=22050)
    scores = np.array([list(r.scores.values()) for r in want])
    np.testing.assert_allclose(first["scores"], scores, atol=1e-5)
    assert first["label"][:, 0].tolist() == [r.label.encode() for r in want]
    alone = predictor.predict(text="green")
    np.testing.assert_allclose(second["scores"][0], list(alone.scores.values()), atol=1e-5)
    assert isinstance(refused, ValueError) and "sample_rate" in str(refused)


def test_cli_writes_the_repository(model_path: Path, tmp_path: Path, capsys) -> None:
    from fusionedge.cli import main

    code = main(
        [
            "triton",
            str(model_path),
            "--repo",
            str(tmp_path),
            "--name",
            "m",
            "--max-batch",
            "4",
            "--instances",
            "3",
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "m" in out and "m_raw" in out
    config = read_config(tmp_path / "m")
    assert config.max_batch_size == 4 and config.instance_group[0].count == 3
    assert json.loads(config.parameters[SPEC_KEY].string_value)["labels"]


def test_bad_options_are_refused(model_path: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_batch"):
        write_repository(model_path, tmp_path, TritonOptions(max_batch=0))
    with pytest.raises(ValueError, match="model name"):
        write_repository(model_path, tmp_path, TritonOptions(name="a/b"))
    assert not any(tmp_path.iterdir())
