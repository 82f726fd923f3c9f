"""Text pieces the card's sections share: number formatting, markdown tables, per-class
rows, and the command that measures a figure no file holds."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

NOT_MEASURED = "not measured"


def fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(c) for c in row) + " |" for row in rows]
    return [*lines, ""]


def scalar_metrics(metrics: dict[str, Any]) -> list[tuple[str, float]]:
    return [(k, v) for k, v in metrics.items() if isinstance(v, int | float) and k != "n_present"]


def per_class_rows(metrics: dict[str, Any], labels: tuple[str, ...]) -> list[list[Any]]:
    """label, support, recall, precision (from the confusion matrix, rows = truth)."""
    matrix = metrics.get("confusion_matrix")
    recall = metrics.get("recall_per_class")
    if not matrix or len(matrix) != len(labels):
        return []
    cols = [sum(row[j] for row in matrix) for j in range(len(labels))]
    rows = []
    for i, name in enumerate(labels):
        support = sum(matrix[i])
        r = recall[i] if recall else (matrix[i][i] / support if support else None)
        p = matrix[i][i] / cols[i] if cols[i] else None
        rows.append([name, support, r, p])
    return rows


def how_to_measure(facts: dict[str, Any], flag: str) -> str:
    """The command that writes a missing figure where the card will find it: `bench` for
    latency, else `eval` with flag (--robustness, --live or '')."""
    model = facts["model"] or (facts["exports"][0].get("model") if facts["exports"] else None)
    name = Path(model).stem if model else "eval"
    what = model or str(facts["run"])
    data = facts["data"].get("path") or "DATA"
    if flag == "bench":
        target = model or "MODEL.onnx"
        out = Path(target).with_name(Path(target).stem + ".bench.json")
        return f"`fusionedge bench {target} --json > {out}`"
    out = Path(what).parent / f"{name}.eval.json" if model else Path(what) / "eval.json"
    return f"`fusionedge eval {what} --data {Path(data).parent} {flag} --json > {out}`".replace(
        "  ", " "
    )
