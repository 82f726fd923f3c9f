"""Small statistics for the soak's analysis and table, None where there is nothing to
compute from (no values, a missing figure). Part of benchmarks/soak.py."""

from __future__ import annotations

import numpy as np


def median(values: list[float] | np.ndarray) -> float | None:
    return float(np.median(values)) if len(values) else None


def theil_sen(t: np.ndarray, y: np.ndarray) -> float | None:
    """Median of the pairwise slopes (robust to a step and to outliers)."""
    if len(t) < 3:
        return None
    i, j = np.triu_indices(len(t), k=1)
    dt = t[j] - t[i]
    keep = dt > 0
    return float(np.median((y[j] - y[i])[keep] / dt[keep]))


def fraction(mask: np.ndarray) -> float | None:
    """The share of True in mask."""
    return float(mask.mean()) if len(mask) else None


def difference(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def scaled(a: float | None, k: float) -> float | None:
    return None if a is None else a * k
