"""What a prediction returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fusionedge.spec import ModelSpec


class NonFiniteError(ValueError):
    """The model gave NaN or infinite scores (for an input far outside what it was trained
    on, such as audio samples of 1e30). Raised instead of returning a Result: NaN scores
    rank as the first label and are not valid JSON."""


@dataclass(frozen=True)
class Result:
    """One sample's prediction.

    Attributes:
        label: The top label (multiclass, binary, multilabel); None for regression.
        scores: Score per label: probabilities (softmax for multiclass/binary, sigmoid per
            label for multilabel) or, for regression, the predicted value.
        top_k: The highest-scoring (label, score) pairs, best first.
        embedding: The fused embedding, float32 [D].
        present: Which modalities the model was given.
        latency_ms: Time per stage ("preprocess", "inference", "postprocess", "total").
            For a batch, each result carries the batch's times.
        value: The predicted number (regression only).
        active: Labels whose score is at least 0.5 (multilabel only).
    """

    label: str | None
    scores: dict[str, float]
    top_k: list[tuple[str, float]]
    embedding: np.ndarray
    present: dict[str, bool]
    latency_ms: dict[str, float] = field(default_factory=dict)
    value: float | None = None
    active: list[str] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (the embedding as a list)."""
        out = {
            "label": self.label,
            "scores": self.scores,
            "top_k": [[k, v] for k, v in self.top_k],
            "present": self.present,
            "latency_ms": self.latency_ms,
            "embedding": self.embedding.tolist(),
        }
        if self.value is not None:
            out["value"] = self.value
        if self.active is not None:
            out["active"] = self.active
        return out


def make_results(
    spec: ModelSpec,
    scores: np.ndarray,
    embedding: np.ndarray,
    present: np.ndarray,
    latency_ms: dict[str, float],
    top_k: int,
) -> list[Result]:
    """Model outputs for a batch -> one Result per row.

    Raises:
        ValueError: scores has a column count other than the spec's number of labels
            (a file whose spec and graph disagree; the Predictor refuses those at load).
    """
    if scores.ndim != 2 or scores.shape[1] != len(spec.labels):
        raise ValueError(
            f"the model gave scores of shape {list(scores.shape)}; the spec has "
            f"{len(spec.labels)} labels, so [N, {len(spec.labels)}] was expected"
        )
    results = []
    for row, emb, mask in zip(scores, embedding, present, strict=True):
        by_label = {label: float(s) for label, s in zip(spec.labels, row, strict=True)}
        given = {m: bool(p) for m, p in zip(spec.modalities, mask, strict=True)}
        if spec.task == "regression":
            results.append(
                Result(None, by_label, [], emb, given, dict(latency_ms), value=float(row[0]))
            )
            continue
        order = np.argsort(-row, kind="stable")[:top_k]
        ranked = [(spec.labels[i], float(row[i])) for i in order]
        active = [k for k, v in by_label.items() if v >= 0.5] if spec.task == "multilabel" else None
        results.append(
            Result(ranked[0][0], by_label, ranked, emb, given, dict(latency_ms), active=active)
        )
    return results
