"""Class imbalance: loss weights per class and a class-balanced sampling order.

Both are computed from the training split only. What they accept per task:

- class_weights "balanced": multiclass and binary weigh each class by n / (C * n_c), so
  every class contributes as much loss as it would in a balanced data set; multilabel
  weighs each label's positive term by (negatives / positives) of that label (BCE's
  pos_weight). A mapping {label: weight} sets weights directly (labels left out get 1;
  for multilabel they are pos_weights). Regression has no classes and refuses both.
- sampler "balanced": every class is drawn equally often (with replacement, weight
  1 / n_c per sample), the same number of samples per epoch as shuffling. It needs one
  class per sample, so it accepts multiclass and binary only.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fusionedge.spec import ModelSpec, SpecError
from fusionedge.training.config import TrainConfig


def class_counts(targets: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """Training samples per class (multiclass, binary) or positives per label (multilabel)."""
    if spec.task == "multilabel":
        return targets.sum(axis=0).astype(np.int64)
    return np.bincount(targets, minlength=len(spec.labels))


def check_balance_options(config: TrainConfig, spec: ModelSpec) -> None:
    """Raises SpecError naming the key when the options do not fit the task or labels."""
    weights = config.class_weights
    if spec.task == "regression" and weights != "none":
        raise SpecError("class_weights: a regression task has no classes; use 'none'")
    if config.sampler == "balanced" and spec.task not in ("multiclass", "binary"):
        raise SpecError(
            f"sampler: 'balanced' needs one class per sample (multiclass or binary), "
            f"this task is {spec.task}; use 'shuffle'"
            + (" with class_weights=balanced" if spec.task == "multilabel" else "")
        )
    if isinstance(weights, dict):
        for label, w in weights.items():
            if label not in spec.labels:
                raise SpecError(f"class_weights.{label}: not one of the labels {list(spec.labels)}")
            if not w > 0:
                raise SpecError(f"class_weights.{label}: expected a positive weight, got {w}")


def class_weights(config: TrainConfig, spec: ModelSpec, targets: np.ndarray) -> np.ndarray | None:
    """float32 [C] loss weights for spec.labels, or None for an unweighted loss."""
    check_balance_options(config, spec)
    if config.class_weights == "none":
        return None
    if isinstance(config.class_weights, dict):
        return np.array(
            [config.class_weights.get(label, 1.0) for label in spec.labels], dtype=np.float32
        )
    counts = class_counts(targets, spec).astype(np.float64)
    if spec.task == "multilabel":
        negatives = len(targets) - counts
        weights = negatives / np.maximum(counts, 1)
        # A label that every sample has would get 0 and never be learned as positive.
        return np.where(counts > 0, np.maximum(weights, 1e-3), 1.0).astype(np.float32)
    present = counts > 0
    weights = np.ones(len(counts))
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return weights.astype(np.float32)


def epoch_order(
    config: TrainConfig, spec: ModelSpec, targets: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """The training sample indices of one epoch, in the order they are used.

    "shuffle" is a permutation; "balanced" draws len(targets) indices with replacement,
    each class with the same total probability. Both come from the epoch's generator,
    which the trainer seeds by (seed, epoch): a resumed run draws the same order.
    """
    n = len(targets)
    if config.sampler == "shuffle":
        return rng.permutation(n)
    counts = class_counts(targets, spec)
    p = 1.0 / counts[targets]
    return rng.choice(n, size=n, replace=True, p=p / p.sum())


def balance_summary(
    config: TrainConfig, spec: ModelSpec, targets: np.ndarray, weights: np.ndarray | None
) -> dict[str, Any]:
    """What metrics.json records: the options, the weights used and the class counts."""
    out: dict[str, Any] = {"sampler": config.sampler, "class_weights": None}
    if spec.task != "regression":
        counts = class_counts(targets, spec)
        out["train_counts"] = {lab: int(c) for lab, c in zip(spec.labels, counts, strict=True)}
    if weights is not None:
        out["class_weights"] = {
            lab: round(float(w), 6) for lab, w in zip(spec.labels, weights, strict=True)
        }
    return out
