"""The Python-backend model that `fusionedge triton` writes as N_raw/: fusionedge's own
runtime inside Triton, for raw inputs (camera frames of any size, PCM at any rate with its
sample rate, text) and for servers without the ONNX Runtime backend.

RAW_MODEL_PY is the model.py written into the repository; it only adapts Triton's request
objects and calls serve_requests here, so the logic is tested without a server.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fusionedge.contract import OUTPUT_NAMES
from fusionedge.runtime.predictor import Predictor

# The raw model's inputs and outputs (numpy dtype, dims after the batch axis; -1: any).
RAW_INPUTS: dict[str, tuple[str, tuple[int, ...]]] = {
    "image": ("uint8", (-1, -1, 3)),
    "audio": ("float32", (-1,)),
    "sample_rate": ("int32", (1,)),
    "text": ("object", (1,)),
}
RAW_LABEL = "label"

RAW_MODEL_PY = '''\
"""fusionedge's runtime as a Triton Python-backend model (written by `fusionedge triton`).

In, each optional (a request sends the modalities it has), n samples per request: image
uint8 [n, H, W, 3] RGB of any size, audio float32 [n, S] PCM at any rate with
sample_rate int32 [n, 1], text as strings [n, 1]. Out: label (string) [n, 1] and scores
float32 [n, C]. The Python that runs the backend's stub must have fusionedge installed.
"""

import json
from pathlib import Path

import triton_python_backend_utils as pb_utils

from fusionedge.runtime.triton_raw import RAW_INPUTS, open_raw_model, serve_requests


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        folder = Path(args["model_repository"]) / args["model_version"]
        self.predictor = open_raw_model(folder, params)

    def execute(self, requests):
        # Every request of the dynamic batcher's batch goes through one model run.
        arrays = [{name: _input(r, name) for name in RAW_INPUTS} for r in requests]
        responses = []
        for answer in serve_requests(self.predictor, arrays):
            if isinstance(answer, Exception):
                error = pb_utils.TritonError(f"{type(answer).__name__}: {answer}")
                responses.append(pb_utils.InferenceResponse(error=error))
            else:
                tensors = [pb_utils.Tensor(k, v) for k, v in answer.items()]
                responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        return responses

    def finalize(self):
        self.predictor.close()


def _input(request, name):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return None if tensor is None else tensor.as_numpy()
'''

Arrays = dict[str, np.ndarray | None]


def open_raw_model(folder: str | Path, params: dict[str, str]) -> Predictor:
    """The raw model's Predictor: the copy in its version folder, with the config's
    `providers` and `threads` parameters. Spinning is off: instances share the cores."""
    folder = Path(folder)
    path = folder / "model.onnx" if (folder / "model.onnx").is_file() else folder / "model.split"
    providers = params.get("providers", "auto")
    threads = int(params.get("threads", "0") or 0)
    return Predictor.from_path(path, providers=providers, threads=threads, spinning=False)


def request_samples(predictor: Predictor, request: Arrays) -> list[dict[str, np.ndarray | None]]:
    """One request's raw arrays -> prepared samples (Predictor.prepare, row by row).

    Raises:
        ValueError: no input, inputs of different batch sizes, or audio without a rate.
    """
    given = {k: v for k, v in request.items() if v is not None}
    sizes = {k: len(v) for k, v in given.items()}
    if not sizes:
        raise ValueError(f"the request has none of the inputs {list(RAW_INPUTS)}")
    if len(set(sizes.values())) != 1:
        raise ValueError(f"every input needs the same batch size; got {sizes}")
    if ("audio" in given) != ("sample_rate" in given):
        raise ValueError("audio and sample_rate come together (sample_rate: Hz of the PCM)")
    samples = []
    for i in range(next(iter(sizes.values()))):
        text = given["text"][i, 0] if "text" in given else None
        rate = given["sample_rate"][i, 0] if "sample_rate" in given else None
        samples.append(
            predictor.prepare(
                image=given["image"][i] if "image" in given else None,
                audio=given["audio"][i] if "audio" in given else None,
                text=text.decode("utf-8") if isinstance(text, bytes) else text,
                sample_rate=int(rate) if rate is not None else None,
            )
        )
    return samples


def answer(predictor: Predictor, samples: list[dict[str, np.ndarray | None]]) -> dict:
    """Prepared samples -> the raw model's outputs: label [n, 1] (bytes; "" for
    regression) and scores [n, C]."""
    from fusionedge.runtime.result import make_results

    batch = predictor.stack(samples)
    scores, embedding = predictor.run(batch)
    results = make_results(predictor.spec, scores, embedding, batch["present"], {}, top_k=1)
    labels = [[(r.label or "").encode("utf-8")] for r in results]
    return {RAW_LABEL: np.array(labels, dtype=object), OUTPUT_NAMES[0]: scores}


def serve_requests(predictor: Predictor, requests: list[Arrays]) -> list[dict | Exception]:
    """The answer to each request, or the error that refused it; one model run for every
    request that prepares (a request that fails alone fails only itself)."""
    prepared: list[list | Exception] = []
    for request in requests:
        try:
            prepared.append(request_samples(predictor, request))
        except Exception as e:  # the client's input: answered to that client, not raised
            prepared.append(e)
    good = [p for p in prepared if not isinstance(p, Exception)]
    try:
        joint = answer(predictor, [s for p in good for s in p]) if good else {}
    except Exception:
        # One request's samples (a NaN in its audio, say) spoil the joint run: each alone.
        return [p if isinstance(p, Exception) else _alone(predictor, p) for p in prepared]
    out: list[dict | Exception] = []
    start = 0
    for p in prepared:
        if isinstance(p, Exception):
            out.append(p)
            continue
        out.append({k: v[start : start + len(p)] for k, v in joint.items()})
        start += len(p)
    return out


def _alone(predictor: Predictor, samples: list) -> dict | Exception:
    try:
        return answer(predictor, samples)
    except Exception as e:
        return e


# ---------------------------------------------------------------------- a local server
