"""Draws a robustness object (sdk.robustness) as one PNG with OpenCV, no plotting library.

Top: the metric per modality subset, on all samples and (when the manifest marks them)
on the clean ones. Below: one panel per corruption, the metric against its level, the
uncorrupted value first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

FONT = cv2.FONT_HERSHEY_SIMPLEX
INK = (40, 40, 40)
GRID = (215, 215, 215)
# BGR: blue for all samples, orange for clean ones.
COLOURS = ((180, 110, 30), (30, 140, 240))
PANEL_W, PANEL_H, COLS = 470, 330, 3
LEFT, RIGHT, TOP, BOTTOM = 60, 20, 40, 70

X_LABELS = {
    "noise_sigma": "gaussian noise sigma (pixel values)",
    "blur_kernel": "blur kernel (pixels)",
    "occlusion_fraction": "occluded fraction",
    "noise_snr_db": "white noise SNR (dB)",
    "typo_rate": "typo rate per character",
}


def _text(
    img: np.ndarray, s: str, x: int, y: int, scale: float = 0.4, centre: bool = False
) -> None:
    if centre:
        (w, _), _ = cv2.getTextSize(s, FONT, scale, 1)
        x -= w // 2
    cv2.putText(img, s, (x, y), FONT, scale, INK, 1, cv2.LINE_AA)


def _axes(img: np.ndarray, title: str, y_max: float, metric: str) -> tuple[int, int, int, int]:
    """Title, y grid and axis; returns the plot box (x0, y0, x1, y1)."""
    h, w = img.shape[:2]
    x0, y0, x1, y1 = LEFT, TOP, w - RIGHT, h - BOTTOM
    _text(img, title, w // 2, 22, 0.5, centre=True)
    for k in range(5):
        v = y_max * k / 4
        y = int(y1 - (y1 - y0) * k / 4)
        cv2.line(img, (x0, y), (x1, y), GRID, 1)
        _text(img, f"{v:.2f}", 8, y + 4)
    cv2.line(img, (x0, y0), (x0, y1), INK, 1)
    cv2.line(img, (x0, y1), (x1, y1), INK, 1)
    _text(img, metric, 8, y0 - 10)
    return x0, y0, x1, y1


def _y(value: float, y_max: float, y0: int, y1: int) -> int:
    return round(y1 - (y1 - y0) * min(max(value / y_max, 0.0), 1.0))


def _subsets_panel(rob: dict[str, Any], width: int, y_max: float) -> np.ndarray:
    img = np.full((PANEL_H, width, 3), 255, np.uint8)
    series = [("all samples", rob["subsets"])]
    if "subsets_clean" in rob:
        series.append(("clean samples", rob["subsets_clean"]))
    counts = f"{rob['n']} samples" + (f", {rob['n_clean']} clean" if "n_clean" in rob else "")
    title = f"modalities present (others marked missing); {counts}"
    x0, y0, x1, y1 = _axes(img, title, y_max, rob["metric"])
    names = list(rob["subsets"])
    group = (x1 - x0) / len(names)
    bar = group * 0.8 / len(series)
    for g, name in enumerate(names):
        left = x0 + g * group + group * 0.1
        for s, (_, values) in enumerate(series):
            v = values[name]
            bx = int(left + s * bar)
            cv2.rectangle(img, (bx, _y(v, y_max, y0, y1)), (int(bx + bar) - 2, y1), COLOURS[s], -1)
            _text(img, f"{v:.2f}", int(bx + bar / 2), _y(v, y_max, y0, y1) - 4, 0.33, True)
        # One modality name per line under the group: long subset names stay readable.
        for k, part in enumerate(name.split("+")):
            _text(img, part, int(x0 + (g + 0.5) * group), y1 + 16 + 14 * k, 0.38, True)
    for s, (label, _) in enumerate(series):
        lx = x1 - 260 + 130 * s
        cv2.rectangle(img, (lx, 10), (lx + 12, 22), COLOURS[s], -1)
        _text(img, label, lx + 16, 21)
    return img


def _noise_panel(
    modality: str, kind: str, levels: dict[str, float], full: float, y_max: float, metric: str
) -> np.ndarray:
    img = np.full((PANEL_H, PANEL_W, 3), 255, np.uint8)
    x0, y0, x1, y1 = _axes(img, f"{modality}: {kind}", y_max, metric)
    points = [("none", full), *levels.items()]
    step = (x1 - x0) / len(points)
    xy = [(int(x0 + step * (i + 0.5)), _y(v, y_max, y0, y1)) for i, (_, v) in enumerate(points)]
    cv2.polylines(img, [np.array(xy, np.int32)], False, COLOURS[0], 2, cv2.LINE_AA)
    for (label, v), (x, y) in zip(points, xy, strict=True):
        cv2.circle(img, (x, y), 4, COLOURS[0], -1, cv2.LINE_AA)
        _text(img, f"{v:.2f}", x, y - 8, 0.35, True)
        _text(img, label, x, y1 + 16, 0.38, True)
    _text(img, X_LABELS.get(kind, kind), (x0 + x1) // 2, y1 + 40, 0.42, True)
    return img


def draw_robustness(rob: dict[str, Any], path: str | Path) -> Path:
    """Writes the robustness chart to `path` (PNG) and returns the path."""
    values = list(rob["subsets"].values()) + [
        v for kinds in rob.get("noise", {}).values() for ls in kinds.values() for v in ls.values()
    ]
    # Accuracy lives in [0, 1]; an error metric gets the largest value plus headroom.
    y_max = 1.0 if rob["metric"] != "mae" else max(max(values) * 1.15, 1e-6)
    panels = [
        _noise_panel(m, kind, levels, rob["full"], y_max, rob["metric"])
        for m, kinds in rob.get("noise", {}).items()
        for kind, levels in kinds.items()
    ]
    width = PANEL_W * COLS
    rows = [_subsets_panel(rob, width, y_max)]
    for start in range(0, len(panels), COLS):
        row = panels[start : start + COLS]
        row += [np.full((PANEL_H, PANEL_W, 3), 255, np.uint8)] * (COLS - len(row))
        rows.append(np.hstack(row))
    path = Path(path)
    if not cv2.imwrite(str(path), np.vstack(rows)):
        raise OSError(f"{path}: OpenCV could not write the PNG")
    return path
