"""`fusionedge eval model.onnx`: the same evaluation as for a run folder, through ONNX Runtime."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fusionedge.arrays import SampleArrays
from fusionedge.evaluation import describe, evaluate_scores, load_split
from fusionedge.runtime.predictor import Predictor


def score_arrays(
    predictor: Predictor,
    arrays: SampleArrays,
    present: np.ndarray | None = None,
    batch_size: int = 256,
) -> np.ndarray:
    """Scores [N, C] of decoded samples, optionally under another present mask."""
    inputs = arrays.inputs()
    if present is not None:
        inputs["present"] = present
    out = [
        predictor.run({k: v[i : i + batch_size] for k, v in inputs.items()})[0]
        for i in range(0, len(arrays), batch_size)
    ]
    return np.concatenate(out) if out else np.zeros((0, predictor.spec.num_outputs), np.float32)


def evaluate_model_file(
    model: str | Path, data: str | Path, split: str = "test", providers: str = "auto"
) -> dict[str, Any]:
    """Evaluates an ONNX file on one split of a data set, fused and per modality."""
    predictor = Predictor.from_path(model, providers=providers)
    spec = predictor.spec
    manifest, arrays = load_split(data, split, spec)
    result = evaluate_scores(
        spec,
        arrays,
        score_arrays(predictor, arrays),
        lambda present: score_arrays(predictor, arrays, present),
    )
    return describe(result, model, manifest, split, spec) | {"providers": predictor.providers}


def robustness_model_file(
    model: str | Path | Predictor,
    data: str | Path,
    split: str = "test",
    providers: str = "auto",
    noise: bool = True,
) -> dict[str, Any]:
    """Missing- and noisy-modality evaluation (fusionedge.robustness) of an ONNX file."""
    from fusionedge.robustness import evaluate_robustness, load_samples

    predictor = model if isinstance(model, Predictor) else Predictor.from_path(model, providers)
    samples = load_samples(data, split, predictor.spec)
    return evaluate_robustness(
        predictor.spec, samples, lambda arrays: score_arrays(predictor, arrays), noise=noise
    )
