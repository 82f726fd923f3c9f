"""Does the ONNX file give the same answers as the PyTorch model?

Both run the same inputs: real validation samples and random ones, at several batch
sizes, under every subset of present modalities (the empty one too: a model must still
answer with every input missing). The largest score difference decides.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fusionedge.arrays import SampleArrays
from fusionedge.contract import modality_subsets, subset_name
from fusionedge.export.onnx_export import example_inputs
from fusionedge.training.model import FusedModel

TOLERANCE = 1e-4
BATCH_SIZES = (1, 4, 32)


class ParityError(RuntimeError):
    """The exported file's scores differ from PyTorch's by more than the tolerance."""

    def __init__(self, report: dict[str, Any]) -> None:
        self.report = report
        worst = report["worst"]
        super().__init__(
            f"ONNX Runtime and PyTorch disagree: max |score difference| "
            f"{report['max_abs_diff_scores']:.3g} > tolerance {report['tolerance']:g} "
            f"(worst case: {worst['source']} inputs, batch {worst['batch']}, present "
            f"{worst['present'] or 'none'}); {report['failed']} of {report['cases']} cases fail"
        )


@dataclass
class Case:
    source: str
    batch: int
    present: str
    inputs: dict[str, np.ndarray]


def real_inputs(samples: SampleArrays, batch: int) -> dict[str, np.ndarray]:
    """The first `batch` samples (repeated when there are fewer)."""
    index = np.arange(batch) % len(samples)
    return {k: v[index] for k, v in samples.inputs().items()}


def cases(
    model: FusedModel, samples: SampleArrays | None, batch_sizes: tuple[int, ...] = BATCH_SIZES
) -> list[Case]:
    spec = model.spec
    out = []
    sources = [("random", None)] + ([("validation", samples)] if samples else [])
    for (source, data), batch in itertools.product(sources, batch_sizes):
        base = example_inputs(spec, batch, seed=batch) if data is None else real_inputs(data, batch)
        for subset in modality_subsets(spec.modalities, empty=True):
            mask = np.array([m in subset for m in spec.modalities])
            inputs = dict(
                base,
                present=base["present"] & mask[None, :]
                if data is not None
                else np.broadcast_to(mask, base["present"].shape).copy(),
            )
            out.append(Case(source, batch, subset_name(subset), inputs))
    return out


def check_parity(
    model: FusedModel,
    onnx_path: str | Path,
    samples: SampleArrays | None = None,
    tolerance: float = TOLERANCE,
    batch_sizes: tuple[int, ...] = BATCH_SIZES,
) -> dict[str, Any]:
    """Compares PyTorch and ONNX Runtime (CPU) on every case; returns the parity report.

    onnx_path is a model file or a split model's folder; either runs through the
    runtime's Predictor, as a user's application would run it.

    Raises:
        ParityError: with the report, when any score differs by more than tolerance.
    """
    from fusionedge.runtime.predictor import Predictor

    with Predictor.from_path(onnx_path, providers=["cpu"]) as predictor:
        model = model.cpu().eval()
        rows = []
        for case in cases(model, samples, batch_sizes):
            with torch.no_grad():
                scores, embedding = model(
                    **{k: torch.from_numpy(v) for k, v in case.inputs.items()}
                )
            got_scores, got_embedding = predictor.run(case.inputs)
            rows.append(
                {
                    "source": case.source,
                    "batch": case.batch,
                    "present": case.present,
                    "scores": float(np.abs(got_scores - scores.numpy()).max()),
                    "embedding": float(np.abs(got_embedding - embedding.numpy()).max()),
                }
            )
    worst = max(rows, key=lambda r: r["scores"])
    report = {
        "tolerance": tolerance,
        "cases": len(rows),
        "failed": sum(r["scores"] > tolerance for r in rows),
        "batch_sizes": list(batch_sizes),
        "sources": sorted({r["source"] for r in rows}),
        "max_abs_diff_scores": worst["scores"],
        "max_abs_diff_embedding": max(r["embedding"] for r in rows),
        "worst": worst,
    }
    if report["failed"]:
        raise ParityError(report)
    return report
