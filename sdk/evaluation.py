"""Evaluation results in the shape every `fusionedge eval` prints, for any backend.

A backend (PyTorch for run folders, ONNX Runtime for model files) supplies the fused
scores and a function that scores the same samples under another `present` mask;
everything else (metrics, the single-modality breakdown, the JSON keys) is shared here.
So are the two other halves every measurement needs: which samples (pick_split, the one
place a split is chosen, with each caller's fallback order) and their scores from any
backend in batches (score_batches).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fusionedge.arrays import SampleArrays, load_arrays
from fusionedge.manifest import Manifest, Record, group_overlap, read_manifest
from fusionedge.metrics import primary_metric, task_metrics
from fusionedge.spec import ModelSpec

ScoreFn = Callable[[np.ndarray], np.ndarray]
# Model inputs (the contract's names, a batch of rows) -> scores [n, C].
RunFn = Callable[[dict[str, np.ndarray]], np.ndarray]


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


def metric_points(spec: ModelSpec, arrays: SampleArrays, scores: np.ndarray) -> tuple[str, float]:
    """The task's primary metric, from evaluate_scores, in points where higher is better.

    Classification: accuracy (or macro F1 for multilabel) x 100. Regression: the MAE as a
    percentage of the targets' standard deviation, negated, so that a "drop" means the
    same thing for every task.
    """
    name, _ = primary_metric(spec.task)
    value = float(evaluate_scores(spec, arrays, scores)["metrics"][name])
    if spec.task == "regression":
        spread = float(np.std(arrays.targets)) or 1.0
        return "-mae_pct_of_target_std", -100.0 * value / spread
    return name, 100.0 * value


def score_batches(
    run: RunFn,
    arrays: SampleArrays,
    num_outputs: int | None = None,
    present: np.ndarray | None = None,
    batch_size: int = 256,
) -> np.ndarray:
    """Scores [N, C] of decoded samples, run through any backend batch_size rows at a time.

    Args:
        run: model inputs -> scores (a Predictor, a raw ONNX Runtime session, ...).
        arrays: The samples.
        num_outputs: C, for the [0, C] result of no samples; None makes no samples an error.
        present: Another present mask [N, M] to score the samples under.
        batch_size: Rows per run: bounds memory; callers keep theirs, since a different
            batching can change scores in the last bits.
    """
    inputs = arrays.inputs()
    if present is not None:
        inputs["present"] = present
    out = [
        run({k: v[i : i + batch_size] for k, v in inputs.items()})
        for i in range(0, len(arrays), batch_size)
    ]
    if not out and num_outputs is None:
        raise ValueError("no samples to score")
    return np.concatenate(out) if out else np.zeros((0, num_outputs), np.float32)


def pick_split(
    data: str | Path,
    splits: Sequence[str],
    limit: int | None = None,
    seed: int | None = None,
    require_labels: bool = True,
) -> tuple[Manifest, str, list[Record]]:
    """The manifest, and the name and records of the first non-empty split of `splits`.

    splits is the caller's fallback order ("all" is every record). With a limit, the
    first `limit` records, or with a seed that many drawn at random (seeded, kept in
    manifest order): manifests are often ordered by class, so the first would not do
    for calibration or accuracy.

    Raises:
        ValueError: every split named is empty, or limit is below 1.
    """
    if limit is not None and limit < 1:
        raise ValueError(f"limit: expected a number of samples of at least 1 or None, got {limit}")
    manifest = read_manifest(data, require_labels=require_labels)
    for split in splits:
        records = manifest.split(split)
        if limit is not None and len(records) > limit:
            if seed is None:
                records = records[:limit]
            else:
                index = np.random.default_rng(seed).choice(len(records), limit, replace=False)
                records = [records[i] for i in sorted(index)]
        if records:
            return manifest, split, records
    raise ValueError(empty_split_message(manifest, splits))


def empty_split_message(manifest: Manifest, splits: Sequence[str]) -> str:
    """Why no samples were found: one split named, with a hint; several, listed."""
    if len(splits) != 1:
        return f"{manifest.path}: no samples in any of the splits {list(splits)}"
    # With few groups the group hash can leave a split empty: say why and what helps.
    hint = (
        "; lines without a split take their group's, so a data set of few groups "
        "can leave one empty: give some lines an explicit split"
        if any(r.group is not None for r in manifest.records)
        else ""
    )
    return f"{manifest.path}: the {splits[0]!r} split is empty{hint}"


def split_arrays(
    data: str | Path,
    spec: ModelSpec,
    splits: Sequence[str],
    limit: int | None = None,
    seed: int | None = 0,
) -> tuple[str, SampleArrays]:
    """pick_split's records decoded for the spec; returns the split's name and the arrays.

    A limit draws at random (seed 0) unless seed is None (then the first records).
    """
    manifest, split, records = pick_split(data, splits, limit, seed)
    return split, load_arrays(records, spec, manifest.path)


def split_records(data: str | Path, split: str) -> tuple[Manifest, list[Record]]:
    """The manifest and the records of one split.

    Raises:
        ValueError: the split has no samples.
    """
    manifest, _, records = pick_split(data, (split,))
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
