"""The live demo window: the frame, the top labels as bars, an audio meter, what is live."""

from __future__ import annotations

import numpy as np

from fusionedge.runtime.live import LiveResult

GREEN, RED, WHITE, GREY = (80, 200, 80), (60, 60, 220), (255, 255, 255), (90, 90, 90)


def audio_level_db(samples: np.ndarray | None) -> float:
    """RMS level in dBFS of the newest audio (-inf for silence or none)."""
    if samples is None or not len(samples):
        return float("-inf")
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
    return 20 * np.log10(rms) if rms > 0 else float("-inf")


def draw(
    result: LiveResult,
    fps: float,
    level_db: float,
    size: tuple[int, int] = (480, 640),
    top: int = 3,
) -> np.ndarray:
    """A BGR canvas of size (height, width) showing one live result."""
    import cv2

    h, w = size
    canvas = np.zeros((h, w, 3), dtype=np.uint8)
    if result.frame is not None:
        canvas[:] = cv2.resize(result.frame, (w, h), interpolation=cv2.INTER_LINEAR)
    else:
        cv2.putText(
            canvas,
            "no camera",
            (w // 2 - 80, h // 2),
            cv2.FONT_HERSHEY_SIMPLEX,
            1.0,
            GREY,
            2,
            cv2.LINE_AA,
        )
    panel = canvas[: 40 + 28 * top, :].astype(np.float32)
    canvas[: 40 + 28 * top, :] = (panel * 0.35).astype(np.uint8)  # darken behind the text
    ranked = sorted(result.scores.items(), key=lambda kv: -kv[1])[:top]
    for i, (label, score) in enumerate(ranked):
        y = 30 + 28 * i
        width = int((w - 200) * max(0.0, min(1.0, score)))
        cv2.rectangle(canvas, (150, y - 16), (150 + width, y + 4), GREEN if i == 0 else GREY, -1)
        cv2.putText(
            canvas, f"{label[:12]}", (10, y), cv2.FONT_HERSHEY_SIMPLEX, 0.6, WHITE, 1, cv2.LINE_AA
        )
        cv2.putText(
            canvas,
            f"{score:.2f}",
            (w - 45, y),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.5,
            WHITE,
            1,
            cv2.LINE_AA,
        )
    # Audio meter: -60 dBFS (empty) to 0 dBFS (full), along the right edge.
    fill = 0.0 if not np.isfinite(level_db) else max(0.0, min(1.0, (level_db + 60) / 60))
    cv2.rectangle(canvas, (w - 20, h - 10 - int((h - 160) * fill)), (w - 8, h - 10), GREEN, -1)
    status = "  ".join(f"{m}:{'on' if on else 'off'}" for m, on in result.present.items())
    line = (
        f"{status}   {fps:.1f} fps   {result.latency_ms['capture_to_result']:.0f} ms   "
        f"dropped {result.dropped_frames}"
    )
    cv2.putText(canvas, line, (10, h - 15), cv2.FONT_HERSHEY_SIMPLEX, 0.5, WHITE, 1, cv2.LINE_AA)
    for i, on in enumerate(result.present.values()):
        cv2.circle(canvas, (w - 60 - 20 * i, 20 + 28 * top), 6, GREEN if on else RED, -1)
    return canvas
