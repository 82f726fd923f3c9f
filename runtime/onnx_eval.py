"""`fusionedge eval model.onnx`: the same evaluation as for a run folder, through ONNX Runtime."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from fusionedge.arrays import SampleArrays
from fusionedge.evaluation import describe, evaluate_scores, load_split, score_batches
from fusionedge.runtime.predictor import Predictor


def score_arrays(
    predictor: Predictor,
    arrays: SampleArrays,
    present: np.ndarray | None = None,
    batch_size: int = 256,
) -> np.ndarray:
    """Scores [N, C] of decoded samples through the Predictor, optionally under another
    present mask (fusionedge.evaluation.score_batches, the scorer export shares)."""
    return score_batches(
        lambda inputs: predictor.run(inputs)[0],
        arrays,
        predictor.spec.num_outputs,
        present,
        batch_size,
    )


@contextmanager
def opened(model: str | Path | Predictor, providers: str) -> Iterator[Predictor]:
    """The caller's Predictor as it is, or one opened from a path and closed after."""
    if isinstance(model, Predictor):
        yield model
        return
    with Predictor.from_path(model, providers=providers) as predictor:
        yield predictor


def evaluate_model_file(
    model: str | Path | Predictor,
    data: str | Path,
    split: str = "test",
    providers: str = "auto",
) -> dict[str, Any]:
    """Evaluates an ONNX file (or an open Predictor) on one split of a data set, fused
    and per modality."""
    with opened(model, providers) as predictor:
        spec = predictor.spec
        manifest, arrays = load_split(data, split, spec)
        result = evaluate_scores(
            spec,
            arrays,
            score_arrays(predictor, arrays),
            lambda present: score_arrays(predictor, arrays, present),
        )
        report = describe(result, predictor.path, manifest, split, spec)
        return report | {"providers": predictor.providers}


def robustness_model_file(
    model: str | Path | Predictor,
    data: str | Path,
    split: str = "test",
    providers: str = "auto",
    noise: bool = True,
) -> dict[str, Any]:
    """Missing- and noisy-modality evaluation (fusionedge.robustness) of an ONNX file."""
    from fusionedge.robustness import evaluate_robustness, load_samples

    with opened(model, providers) as predictor:
        samples = load_samples(data, split, predictor.spec)
        return evaluate_robustness(
            predictor.spec, samples, lambda arrays: score_arrays(predictor, arrays), noise=noise
        )


def live_model_file(
    model: str | Path | Predictor,
    data: str | Path,
    split: str = "test",
    seed: int = 0,
    providers: str = "auto",
) -> dict[str, Any]:
    """Live-condition evaluation (fusionedge.live_eval) of an ONNX file or split folder.

    A split model re-encodes audio only every audio hop in the live loop, so its turns
    reuse a window until the frames have moved a hop on (LiveOptions' default hop).
    """
    from fusionedge.live_eval import LiveSettings, evaluate_live
    from fusionedge.runtime.live import LiveOptions

    options = LiveOptions()
    with opened(model, providers) as predictor:
        settings = LiveSettings(
            smoothing=options.smoothing,
            audio_hop_ms=options.audio_hop_ms if predictor.split is not None else None,
        )
        return evaluate_live(
            predictor.spec,
            data,
            split,
            lambda arrays: score_arrays(predictor, arrays),
            seed,
            settings,
        )
