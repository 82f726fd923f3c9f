"""A `fusionedge triton` repository on a real tritonserver (nvidia-pytriton's binary, on
127.0.0.1), answered through tritonclient and held to the Predictor's scores.

The server in nvidia-pytriton has the Python backend only, no ONNX Runtime backend. So
the raw model (Python backend, fusionedge's runtime inside) runs as written, and the
ONNX Runtime models and the ensemble run with their config.pbtxt unchanged except
`platform: "onnxruntime_onnx"` -> `backend: "python"` and a model.py that runs the same
model.onnx in ONNX Runtime: the server still checks the generated inputs, outputs,
dims, batching, label files and the ensemble's wiring, but Triton's ONNX Runtime backend
itself is not exercised here.

pytriton 0.7's stub mis-reads numpy >= 2 arrays: the server's Python must have numpy < 2
and fusionedge. FUSIONEDGE_TRITON_PYTHON names it (default: this interpreter); the tests
skip, saying why, where no server can run.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from fusionedge.runtime import Predictor
from fusionedge.runtime.triton_repo import TritonOptions, write_repository
from fusionedge.runtime.triton_server import ServerUnavailable, local_server

http = pytest.importorskip("tritonclient.http", reason="needs tritonclient[http]")

# Runs model.onnx in ONNX Runtime in place of the ONNX Runtime backend. The dynamic
# batcher hands the Python backend its requests unmerged: they run as one batch, as the
# ONNX Runtime backend would run them.
ORT_SHIM = """
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.inputs = [t["name"] for t in config["input"]]
        self.outputs = [t["name"] for t in config["output"]]
        path = Path(args["model_repository"]) / args["model_version"] / "model.onnx"
        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def execute(self, requests):
        feeds = [
            {n: pb_utils.get_input_tensor_by_name(r, n).as_numpy() for n in self.inputs}
            for r in requests
        ]
        merged = {n: np.concatenate([f[n] for f in feeds]) for n in self.inputs}
        outputs = self.session.run(self.outputs, merged)
        responses, start = [], 0
        for f in feeds:
            n = len(next(iter(f.values())))
            rows = [v[start:start + n] for v in outputs]
            tensors = [pb_utils.Tensor(k, v) for k, v in zip(self.outputs, rows)]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start += n
        return responses
"""


def emulate_onnx_backend(repo: Path) -> None:
    for config in repo.glob("*/config.pbtxt"):
        text = config.read_text()
        if 'platform: "onnxruntime_onnx"' in text:
            config.write_text(text.replace('platform: "onnxruntime_onnx"', 'backend: "python"'))
            (config.parent / "1" / "model.py").write_text(ORT_SHIM)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """An untrained image + audio + text model: the single file and its split folder."""
    import torch
    from support import tiny_spec

    from fusionedge.export.onnx_export import export_onnx
    from fusionedge.export.split import export_split
    from fusionedge.training.model import FusedModel

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("triton_models")
    model = FusedModel(tiny_spec()).eval()
    export_onnx(model, root / "model.onnx")
    export_split(model, root / "model.split")
    return {"single": root / "model.onnx", "split": root / "model.split"}


@pytest.fixture(scope="module")
def server(models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    repo = tmp_path_factory.mktemp("triton_repo")
    options = TritonOptions(max_batch=8, device="cpu")
    write_repository(models["single"], repo, TritonOptions("m", 8, device="cpu"))
    write_repository(models["split"], repo, TritonOptions("s", options.max_batch, device="cpu"))
    emulate_onnx_backend(repo)
    python = os.environ.get("FUSIONEDGE_TRITON_PYTHON", sys.executable)
    try:
        with local_server(repo, ["m", "m_raw", "s"], python=python) as url:
            yield http.InferenceServerClient(url)
    except ServerUnavailable as e:
        pytest.skip(f"no tritonserver: {e}; FUSIONEDGE_TRITON_PYTHON names another Python")


@pytest.fixture(scope="module")
def predictor(models: dict[str, Path]) -> Iterator[Predictor]:
    with Predictor.from_path(models["single"], providers="cpu", threads=1) as p:
        yield p


def tensor(name: str, array: np.ndarray) -> object:
    kind = {"uint8": "UINT8", "float32": "FP32", "int32": "INT32", "int64": "INT64"}
    kind |= {"bool": "BOOL", "object": "BYTES"}
    t = http.InferInput(name, list(array.shape), kind[array.dtype.name])
    t.set_data_from_numpy(array)
    return t


def raw_samples() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    return {
        "image": rng.integers(0, 256, (2, 33, 47, 3), dtype=np.uint8),  # any size
        "audio": (0.2 * rng.standard_normal((2, 12000))).astype(np.float32),
        "sample_rate": np.full((2, 1), 24000, np.int32),  # not the model's rate
        "text": np.array([[b"red"], [b"green blue"]], dtype=object),
    }


def test_raw_model_scores_equal_the_predictors(server, predictor: Predictor) -> None:
    raw = raw_samples()
    result = server.infer("m_raw", [tensor(k, v) for k, v in raw.items()])
    texts = [t.decode() for t in raw["text"][:, 0]]
    want = predictor.predict_batch(list(raw["image"]), list(raw["audio"]), texts, 24000)
    scores = np.array([list(r.scores.values()) for r in want])
    np.testing.assert_allclose(result.as_numpy("scores"), scores, atol=1e-5)
    assert result.as_numpy("label")[:, 0].tolist() == [r.label.encode() for r in want]


def test_raw_model_takes_any_subset_and_refuses_bad_requests(server, predictor) -> None:
    text = np.array([[b"red"]], dtype=object)
    result = server.infer("m_raw", [tensor("text", text)])
    alone = predictor.predict(text="red")
    np.testing.assert_allclose(result.as_numpy("scores")[0], list(alone.scores.values()), atol=1e-5)
    audio = raw_samples()["audio"][:1]
    with pytest.raises(Exception, match="sample_rate"):
        server.infer("m_raw", [tensor("audio", audio)])


@pytest.mark.parametrize("model", ["m", "s"])
def test_onnx_models_and_ensemble_equal_the_predictor(server, predictor, model: str) -> None:
    """The single file's config ("m") and the split model's ensemble ("s"), each on
    prepared inputs with one modality absent in the second row."""
    raw = raw_samples()
    samples = [predictor.prepare(raw["image"][i], raw["audio"][i], "red", 24000) for i in range(2)]
    samples[1]["audio"] = None
    batch = predictor.stack(samples)
    result = server.infer(model, [tensor(k, v) for k, v in batch.items()])
    scores, embedding = predictor.run(batch)
    np.testing.assert_allclose(result.as_numpy("scores"), scores, atol=1e-5)
    np.testing.assert_allclose(result.as_numpy("embedding"), embedding, atol=1e-5)
