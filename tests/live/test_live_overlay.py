"""The demo window's drawing, without a display: what draw() puts on the canvas."""

from __future__ import annotations

import numpy as np

from fusionedge.runtime.live import LiveResult
from fusionedge.runtime.overlay import audio_level_db, draw


def result(frame: np.ndarray | None, scores: dict[str, float], present: dict[str, bool]):
    return LiveResult(
        t=1.0,
        label=max(scores, key=scores.get),
        scores=scores,
        present=present,
        input_age_ms={"image": 5.0, "audio": 3.0},
        latency_ms={"capture_to_result": 7.5},
        dropped_frames=2,
        overflows=0,
        frame=frame,
    )


def green_pixels(image: np.ndarray) -> int:
    return int(((image[:, :, 1] > 150) & (image[:, :, 0] < 120)).sum())


def test_draw_shows_the_frame_and_a_bar_that_grows_with_the_top_score():
    frame = np.full((120, 160, 3), (200, 0, 0), np.uint8)  # blue in BGR
    low = draw(result(frame, {"a": 0.3, "b": 0.2}, {"image": True, "audio": True}), 30.0, -20.0)
    high = draw(result(frame, {"a": 0.9, "b": 0.1}, {"image": True, "audio": True}), 30.0, -20.0)
    assert low.shape == (480, 640, 3) and low.dtype == np.uint8
    assert low[400, 320, 0] > 150 and low[400, 320, 2] < 60  # the frame, scaled, below the panel
    assert green_pixels(high) > green_pixels(low)  # a longer bar for a higher top score


def test_draw_without_a_frame_and_with_inputs_off():
    canvas = draw(
        result(None, {"a": 0.6, "b": 0.4}, {"image": False, "audio": False}), 0.0, float("-inf")
    )
    assert canvas.shape == (480, 640, 3)
    red = int(((canvas[:, :, 2] > 180) & (canvas[:, :, 1] < 100)).sum())
    assert red > 0  # the status dots of the missing inputs are red


def test_audio_level_db():
    assert audio_level_db(None) == float("-inf")
    assert audio_level_db(np.zeros(100, np.float32)) == float("-inf")
    tone = 0.5 * np.sin(np.linspace(0, 200 * np.pi, 16000)).astype(np.float32)
    assert abs(audio_level_db(tone) - 20 * np.log10(0.5 / np.sqrt(2))) < 0.1
