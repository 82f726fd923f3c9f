"""Task metrics against small examples computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fusionedge.metrics import (
    classification_metrics,
    multilabel_metrics,
    primary_metric,
    regression_metrics,
    task_metrics,
)

# Confusion (rows true, columns predicted): [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
# precision = [1/2, 2/3, 1/1], recall = [1/2, 2/2, 1/2], F1 = [1/2, 4/5, 2/3]
TARGETS = np.array([0, 0, 1, 1, 2, 2])
PREDICTED = np.array([0, 1, 1, 1, 2, 0])


def test_classification_against_hand_computed_values():
    m = classification_metrics(TARGETS, PREDICTED, 3)
    assert m["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["macro_precision"] == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)
    assert m["macro_recall"] == pytest.approx((1 / 2 + 1 + 1 / 2) / 3)
    assert m["macro_f1"] == pytest.approx((1 / 2 + 4 / 5 + 2 / 3) / 3)
    assert m["recall_per_class"] == pytest.approx([0.5, 1.0, 0.5])
    assert all(isinstance(m[k], float) for k in ("accuracy", "macro_precision", "macro_f1"))


def test_classes_absent_from_targets_and_predictions_are_excluded():
    three = classification_metrics(TARGETS, PREDICTED, 3)
    five = classification_metrics(TARGETS, PREDICTED, 5)
    for key in ("accuracy", "macro_precision", "macro_recall", "macro_f1"):
        assert five[key] == pytest.approx(three[key])
    assert np.array(five["confusion_matrix"]).shape == (5, 5)
    assert five["recall_per_class"][3:] == [0.0, 0.0]


def test_a_class_only_predicted_counts_as_zero():
    # Class 1 never occurs in the targets but is predicted once: it is in the average.
    m = classification_metrics(np.array([0, 0]), np.array([0, 1]), 2)
    assert m["confusion_matrix"] == [[1, 1], [0, 0]]
    assert m["accuracy"] == pytest.approx(0.5)
    assert m["macro_precision"] == pytest.approx((1.0 + 0.0) / 2)
    assert m["macro_recall"] == pytest.approx((0.5 + 0.0) / 2)
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0.0) / 2)


def test_a_class_only_in_targets_counts_as_zero():
    m = classification_metrics(np.array([0, 1]), np.array([0, 0]), 2)
    assert m["macro_precision"] == pytest.approx((0.5 + 0.0) / 2)
    assert m["macro_recall"] == pytest.approx((1.0 + 0.0) / 2)


def test_perfect_and_empty_classification():
    m = classification_metrics(np.array([2, 0, 1]), np.array([2, 0, 1]), 3)
    assert m["accuracy"] == m["macro_precision"] == m["macro_recall"] == m["macro_f1"] == 1.0
    empty = classification_metrics(np.array([], int), np.array([], int), 3)
    assert empty["accuracy"] == 0.0 and empty["macro_f1"] == 0.0
    assert empty["confusion_matrix"] == [[0] * 3] * 3


MULTI_TARGETS = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0]], np.float32)
MULTI_SCORES = np.array([[0.9, 0.2, 0.4], [0.1, 0.7, 0.6], [0.8, 0.6, 0.1]], np.float32)


def test_multilabel_against_hand_computed_values():
    # Predicted at 0.5: [[1,0,0],[0,1,1],[1,1,0]]; only row 2 is entirely right.
    # Per label tp/fp/fn: a 2/0/0, b 2/0/0, c 0/1/1 -> F1 1, 1, 0; micro 2*4/(8+1+1).
    m = multilabel_metrics(MULTI_TARGETS, MULTI_SCORES)
    assert m["accuracy"] == pytest.approx(1 / 3)
    assert m["macro_f1"] == pytest.approx(2 / 3)
    assert m["micro_f1"] == pytest.approx(0.8)


def test_multilabel_threshold_is_inclusive_and_adjustable():
    # At 0.35: row 0 now right too; c becomes tp 1, fp 1, fn 0 -> F1 2/3; micro 10/11.
    m = multilabel_metrics(MULTI_TARGETS, MULTI_SCORES, threshold=0.35)
    assert m["accuracy"] == pytest.approx(2 / 3)
    assert m["macro_f1"] == pytest.approx((1 + 1 + 2 / 3) / 3)
    assert m["micro_f1"] == pytest.approx(10 / 11)
    at = multilabel_metrics(np.array([[1.0]]), np.array([[0.5]]))
    assert at["accuracy"] == 1.0 and at["micro_f1"] == 1.0


def test_multilabel_label_never_true_nor_predicted_is_excluded():
    targets = np.hstack([MULTI_TARGETS, np.zeros((3, 1), np.float32)])
    scores = np.hstack([MULTI_SCORES, np.full((3, 1), 0.1, np.float32)])
    m = multilabel_metrics(targets, scores)
    assert m["macro_f1"] == pytest.approx(2 / 3)
    assert m["micro_f1"] == pytest.approx(0.8)


def test_multilabel_all_negative_and_empty():
    m = multilabel_metrics(np.zeros((2, 3)), np.zeros((2, 3)))
    assert m == {"accuracy": 1.0, "micro_f1": 0.0, "macro_f1": 0.0}
    assert multilabel_metrics(np.zeros((0, 3)), np.zeros((0, 3)))["accuracy"] == 0.0


def test_regression_mae_and_rmse():
    m = regression_metrics(np.array([1.0, 2.0, 3.0, 4.0]), np.array([[1.5], [2.0], [2.0], [6.0]]))
    # errors 0.5, 0, -1, 2
    assert m["mae"] == pytest.approx(3.5 / 4)
    assert m["rmse"] == pytest.approx(math.sqrt((0.25 + 0 + 1 + 4) / 4))
    perfect = regression_metrics(np.ones((3, 1), np.float32), np.ones((3, 1), np.float32))
    assert perfect == {"mae": 0.0, "rmse": 0.0}


def test_task_metrics_dispatch():
    scores = np.eye(3)[PREDICTED] * 0.8 + 0.05  # argmax is PREDICTED
    assert task_metrics("multiclass", TARGETS, scores) == classification_metrics(
        TARGETS, PREDICTED, 3
    )
    assert task_metrics("multilabel", MULTI_TARGETS, MULTI_SCORES)["micro_f1"] == pytest.approx(0.8)
    assert task_metrics("regression", np.array([[0.0]]), np.array([[2.0]]))["mae"] == 2.0
    with pytest.raises(ValueError, match="'ranking'"):
        task_metrics("ranking", TARGETS, scores)


@pytest.mark.parametrize(
    ("task", "expected"),
    [
        ("multiclass", ("accuracy", True)),
        ("binary", ("accuracy", True)),
        ("multilabel", ("macro_f1", True)),
        ("regression", ("mae", False)),
    ],
)
def test_primary_metric(task, expected):
    assert primary_metric(task) == expected
