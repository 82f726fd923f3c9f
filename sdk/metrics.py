"""Task metrics in numpy, shared by training, evaluation of run folders and of ONNX files."""

from __future__ import annotations

from typing import Any

import numpy as np


def classification_metrics(
    targets: np.ndarray, predicted: np.ndarray, num_classes: int
) -> dict[str, Any]:
    """Accuracy, macro precision/recall/F1 and the confusion matrix.

    Macro averages run over the classes that occur in targets or predictions, so a class
    absent from a small evaluation split neither counts as perfect nor as zero.

    Args:
        targets: int [N] true class ids.
        predicted: int [N] predicted class ids.
        num_classes: Size of the label set.
    """
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(confusion, (targets, predicted), 1)
    tp = np.diag(confusion).astype(np.float64)
    support = confusion.sum(axis=1)
    predicted_count = confusion.sum(axis=0)
    seen = (support + predicted_count) > 0
    precision = np.divide(tp, predicted_count, out=np.zeros_like(tp), where=predicted_count > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    n = max(int(confusion.sum()), 1)
    return {
        "accuracy": float(tp.sum() / n),
        "macro_precision": float(precision[seen].mean()) if seen.any() else 0.0,
        "macro_recall": float(recall[seen].mean()) if seen.any() else 0.0,
        "macro_f1": float(f1[seen].mean()) if seen.any() else 0.0,
        "recall_per_class": [float(r) for r in recall],
        "confusion_matrix": confusion.tolist(),
    }


def multilabel_metrics(
    targets: np.ndarray, scores: np.ndarray, threshold: float = 0.5
) -> dict[str, Any]:
    """Subset accuracy (every label right), micro and macro F1 at a score threshold."""
    pred = scores >= threshold
    truth = targets >= 0.5
    tp = (pred & truth).sum(axis=0).astype(np.float64)
    fp = (pred & ~truth).sum(axis=0)
    fn = (~pred & truth).sum(axis=0)
    f1 = np.divide(2 * tp, 2 * tp + fp + fn, out=np.zeros_like(tp), where=(2 * tp + fp + fn) > 0)
    seen = (tp + fp + fn) > 0
    micro_denom = 2 * tp.sum() + fp.sum() + fn.sum()
    return {
        "accuracy": float((pred == truth).all(axis=1).mean()) if len(pred) else 0.0,
        "micro_f1": float(2 * tp.sum() / micro_denom) if micro_denom else 0.0,
        "macro_f1": float(f1[seen].mean()) if seen.any() else 0.0,
    }


def regression_metrics(targets: np.ndarray, predicted: np.ndarray) -> dict[str, Any]:
    """Mean absolute error and root mean squared error."""
    err = predicted.reshape(-1).astype(np.float64) - targets.reshape(-1)
    return {"mae": float(np.abs(err).mean()), "rmse": float(np.sqrt((err**2).mean()))}


def task_metrics(task: str, targets: np.ndarray, scores: np.ndarray) -> dict[str, Any]:
    """Metrics for a task from the model's `scores` output and encoded targets."""
    if task in ("multiclass", "binary"):
        return classification_metrics(targets, scores.argmax(axis=1), scores.shape[1])
    if task == "multilabel":
        return multilabel_metrics(targets, scores)
    if task == "regression":
        return regression_metrics(targets, scores)
    raise ValueError(f"unknown task {task!r}")


def primary_metric(task: str) -> tuple[str, bool]:
    """The metric model selection uses, and whether higher is better."""
    if task == "regression":
        return "mae", False
    if task == "multilabel":
        return "macro_f1", True
    return "accuracy", True
