"""Evaluation results in the shape every `fusionedge eval` prints, for any backend.

A backend (PyTorch for run folders, ONNX Runtime for model files) supplies the fused
scores and a function that scores the same samples under another `present` mask;
everything else (metrics, the single-modality breakdown, the JSON keys) is shared here.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from fusionedge.arrays import SampleArrays, load_arrays
from fusionedge.manifest import Manifest, Record, group_overlap, read_manifest
from fusionedge.metrics import task_metrics
from fusionedge.spec import ModelSpec

ScoreFn = Callable[[np.ndarray], np.ndarray]


def evaluate_scores(
    spec: ModelSpec, arrays: SampleArrays, scores: np.ndarray, score_with: ScoreFn | None = None
) -> dict[str, Any]:
    """The eval object: {"n", "metrics", "by_modality"}.

    by_modality[m] is the model given only modality m, every other one marked missing,
    over all n samples (a sample without m then has nothing to go on, as in the field);
    "n_present" counts the samples that have m and "accuracy_when_present" (classification)
    scores those alone.

    Args:
        spec: The model's spec.
        arrays: Labelled samples.
        scores: The model's scores [N, C] with the samples' own present masks.
        score_with: present mask -> scores; None skips by_modality.
    """
    if arrays.targets is None:
        raise ValueError("evaluation needs labelled samples")
    result: dict[str, Any] = {
        "n": len(arrays),
        "metrics": task_metrics(spec.task, arrays.targets, scores),
    }
    if score_with is None:
        return result
    result["by_modality"] = {}
    for j, m in enumerate(spec.modalities):
        only = np.zeros_like(arrays.present)
        only[:, j] = arrays.present[:, j]
        alone = score_with(only)
        entry = task_metrics(spec.task, arrays.targets, alone)
        entry.pop("confusion_matrix", None)
        entry.pop("recall_per_class", None)
        has = arrays.present[:, j]
        entry["n_present"] = int(has.sum())
        if "accuracy" in entry and spec.task in ("multiclass", "binary") and has.any():
            entry["accuracy_when_present"] = float(
                (alone[has].argmax(axis=1) == arrays.targets[has]).mean()
            )
        result["by_modality"][m] = entry
    return result


def split_records(data: str | Path, split: str) -> tuple[Manifest, list[Record]]:
    """The manifest and the records of one split.

    Raises:
        ValueError: the split has no samples.
    """
    manifest = read_manifest(data)
    records = manifest.split(split)
    if not records:
        # With few groups the group hash can leave a split empty: say why and what helps.
        hint = (
            "; lines without a split take their group's, so a data set of few groups "
            "can leave one empty: give some lines an explicit split"
            if any(r.group is not None for r in manifest.records)
            else ""
        )
        raise ValueError(f"{manifest.path}: the {split!r} split is empty{hint}")
    return manifest, records


def load_split(data: str | Path, split: str, spec: ModelSpec) -> tuple[Manifest, SampleArrays]:
    """A data set's split decoded for the spec; returns the manifest and the arrays.

    Raises:
        ValueError: the split has no samples.
    """
    manifest, records = split_records(data, split)
    return manifest, load_arrays(records, spec, manifest.path)


def describe(
    result: dict[str, Any], model: str | Path, manifest: Manifest, split: str, spec: ModelSpec
) -> dict[str, Any]:
    """Adds what was evaluated (model, data, split, modalities, labels, task) to a result,
    and "groups" when the split's lines have groups (see split_groups)."""
    result.update(
        model=str(model),
        data=str(manifest.path),
        split=split,
        modalities=list(spec.modalities),
        labels=list(spec.labels),
        task=spec.task,
    )
    groups = split_groups(manifest, split)
    if groups is not None:
        result["groups"] = groups
    return result


def split_groups(manifest: Manifest, split: str) -> dict[str, int] | None:
    """How many of a split's groups the train split also has, or None when no line of the
    split has a group: a score on speakers or sessions the model trained on says little
    about new ones."""
    overlap = group_overlap(manifest.split("train"), manifest.split(split))
    return overlap if overlap["n_groups"] else None
