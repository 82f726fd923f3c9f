"""fusionedge.live_eval: the live scenes (frame, stream, turns) and the bookkeeping, without
a model (the trained-model and CLI checks are in tests/e2e/test_live_eval.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import cv2
import numpy as np
import pytest

from fusionedge.arrays import SampleArrays
from fusionedge.live_eval import (
    LiveSettings,
    active_span,
    audio_cuts,
    audio_scene,
    build_sample,
    camera_frame,
    compose_frame,
    evaluate_live,
    format_live,
    frame_ends,
    jpeg_roundtrip,
    sample_rng,
    smooth,
    vote,
)
from fusionedge.manifest import read_manifest

RATE, N = 8000, 4000  # build_spec's tiny audio: 0.5 s windows at 8 kHz
MAGENTA, CYAN = (255, 0, 255), (0, 255, 255)  # RGB; a noisy wall never matches either


def sine(freq: float, rate: int, seconds: float) -> np.ndarray:
    t = np.arange(round(rate * seconds)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def two_colour_image(h: int = 20, w: int = 40) -> np.ndarray:
    """RGB: magenta left half, cyan right half, so orientation and aspect show."""
    rgb = np.zeros((h, w, 3), np.uint8)
    rgb[:, : w // 2], rgb[:, w // 2 :] = MAGENTA, CYAN
    return rgb


def test_compose_frame_pastes_the_image_at_the_drawn_scale_and_place() -> None:
    settings = LiveSettings()
    for seed in range(20):
        frame, at = compose_frame(two_colour_image(), np.random.default_rng(seed), settings)
        assert frame.shape == (480, 640, 3) and frame.dtype == np.uint8
        # The same draws, in compose_frame's order: the scale, then the place.
        twin = np.random.default_rng(seed)
        longer = round(twin.uniform(0.4, 1.0) * 480)
        assert (at.height, at.width) == (round(longer / 2), longer)
        assert (at.top, at.left) == (
            twin.integers(0, 480 - at.height + 1),
            twin.integers(0, 640 - at.width + 1),
        )
        bgr = {name: np.array(c[::-1]) for name, c in (("magenta", MAGENTA), ("cyan", CYAN))}
        inside = frame[at.top : at.top + at.height, at.left : at.left + at.width]
        quarter = at.width // 4
        # Enlarging blends colours near the seam; away from it the colours are exact.
        assert (inside[:, :quarter] == bgr["magenta"]).all()
        assert (inside[:, -quarter:] == bgr["cyan"]).all()
        # Nowhere outside the pasted box is there a pixel of either colour.
        ys, xs = np.nonzero(
            (frame == bgr["magenta"]).all(axis=2) | (frame == bgr["cyan"]).all(axis=2)
        )
        assert (ys.min(), ys.max() + 1) == (at.top, at.top + at.height)
        assert (xs.min(), xs.max() + 1) == (at.left, at.left + at.width)


def test_scale_and_place_cover_the_ranges() -> None:
    settings = LiveSettings()
    sizes, lefts = [], []
    for seed in range(60):
        _, at = compose_frame(two_colour_image(30, 30), np.random.default_rng(seed), settings)
        assert (
            at.top >= 0 and at.top + at.height <= 480 and at.left >= 0 and at.left + at.width <= 640
        )
        sizes.append(at.height / 480)
        lefts.append(at.left)
    assert 0.4 <= min(sizes) < 0.5 and 0.9 < max(sizes) <= 1.0
    assert min(lefts) < 50 and max(lefts) > 300


def test_background_is_not_flat_and_depends_on_the_seed() -> None:
    a, _ = compose_frame(two_colour_image(), np.random.default_rng(1), LiveSettings())
    b, _ = compose_frame(two_colour_image(), np.random.default_rng(2), LiveSettings())
    assert a[:, :, 0].std() > 1.0 and not np.array_equal(a, b)


def test_jpeg_roundtrip_is_lossy_but_close() -> None:
    frame, _ = compose_frame(two_colour_image(), np.random.default_rng(0), LiveSettings())
    out = jpeg_roundtrip(frame, 60)
    assert out.shape == frame.shape and not np.array_equal(out, frame)
    assert np.abs(out.astype(int) - frame).mean() < 8
    camera = camera_frame(two_colour_image(), np.random.default_rng(0), LiveSettings())
    assert camera.shape == (480, 640, 3)


def test_active_span_trims_silence_to_within_a_frame() -> None:
    clip = np.concatenate([np.zeros(1600), sine(440, RATE, 0.3), np.zeros(800)]).astype(np.float32)
    start, end = active_span(clip, RATE)
    assert abs(start - 1600) <= 80 and abs(end - 4000) <= 80
    assert active_span(np.zeros(500, np.float32), RATE) == (0, 500)


def test_frame_ends_and_cuts() -> None:
    ends = frame_ends(N, RATE, 30.0, 20000)
    assert ends[0] == N and ends[-1] >= 20000 and ends[-2] < 20000
    assert set(np.diff(ends)) <= {266, 267}
    assert np.array_equal(audio_cuts(ends, 0), ends)
    cuts = audio_cuts(ends, 800)  # a 100 ms hop at 8 kHz
    changed = np.flatnonzero(np.diff(cuts)) + 1
    assert np.array_equal(cuts[changed], ends[changed])  # a new cut is that frame's own end
    assert (np.diff(cuts[np.r_[0, changed]]) >= 800).all()
    assert (ends - cuts < 800).all()  # never more than a hop behind the frame


def quiet(**kw: object) -> LiveSettings:
    """Settings whose noise is far below the utterance, so samples show where it is."""
    return replace(LiveSettings(), snr_db_range=(80.0, 80.0), **kw)


def test_the_utterance_lands_at_the_drawn_offset() -> None:
    voice = sine(500, RATE, 0.2)
    for seed in range(10):
        scene = audio_scene(voice, RATE, N, np.random.default_rng(seed), quiet())
        o = scene.offset
        assert scene.stream is not None and len(scene.stream) == scene.cuts[-1]
        assert o >= 0 and o + len(voice) <= scene.cuts[-1]
        np.testing.assert_allclose(scene.stream[o : o + len(voice)], voice, atol=1e-3)
        rest = np.r_[scene.stream[:o], scene.stream[o + len(voice) :]]
        assert np.sqrt(np.mean(rest**2)) < 1e-3
        assert scene.event == (o, o + len(voice))


def test_windows_holding_the_event_are_those_with_all_its_energy() -> None:
    voice = sine(500, RATE, 0.2)
    energy = float(np.sum(voice.astype(np.float64) ** 2))
    for seed in range(10):
        scene = audio_scene(voice, RATE, N, np.random.default_rng(seed), quiet())
        windows = scene.windows(N, slice(None))
        held_by_samples = np.sum(windows.astype(np.float64) ** 2, axis=1) > energy * 0.9999
        assert np.array_equal(scene.holds_event(N), held_by_samples)
        assert 1 <= held_by_samples.sum() < len(windows)


@pytest.mark.parametrize("seconds", [0.05, 0.2, 0.45, 0.6, 2.5])
@pytest.mark.parametrize("hop_ms", [None, 100.0])
def test_every_utterance_has_a_window_that_holds_it(seconds: float, hop_ms: float | None) -> None:
    """Also utterances longer than a window (cut to the centre part) and split-model hops."""
    voice = sine(500, RATE, seconds)
    for seed in range(30):
        scene = audio_scene(voice, RATE, N, np.random.default_rng(seed), quiet(audio_hop_ms=hop_ms))
        assert scene.holds_event(N).any()
        start, end = scene.event
        assert scene.offset <= start < end <= scene.offset + len(voice) <= scene.cuts[-1]


def test_stream_noise_has_the_drawn_snr() -> None:
    voice = sine(500, RATE, 0.3)
    scene = audio_scene(voice, RATE, N, np.random.default_rng(3), LiveSettings())
    o = scene.offset
    noise = np.r_[scene.stream[:o], scene.stream[o + len(voice) :]].astype(np.float64)
    achieved = 10 * np.log10(np.mean(voice.astype(np.float64) ** 2) / np.mean(noise**2))
    assert 10 <= scene.snr_db <= 30 and abs(achieved - scene.snr_db) < 0.3


def test_same_seed_same_scene_other_seed_other_windows() -> None:
    voice = sine(500, RATE, 0.2)

    def windows(seed: int) -> np.ndarray:
        return audio_scene(voice, RATE, N, np.random.default_rng(seed), LiveSettings()).windows(
            N, slice(None)
        )

    assert np.array_equal(windows(5), windows(5))
    a, b = windows(5), windows(6)
    assert a.shape != b.shape or not np.array_equal(a, b)


def test_smooth_and_vote() -> None:
    scores = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    assert np.array_equal(smooth(scores, 0.0), scores)
    np.testing.assert_allclose(smooth(scores, 0.5), [[1, 0], [0.5, 0.5], [0.25, 0.75]])
    assert vote(np.array([0, 1, 1]), scores) == 1
    # A tie goes to the label with the higher mean score.
    tie = np.array([[0.9, 0.1], [0.3, 0.7]])
    assert vote(np.array([0, 1]), tie) == 0


def test_default_smoothing_and_hop_are_the_live_loops() -> None:
    from fusionedge.runtime.live import LiveOptions

    assert LiveSettings().smoothing == LiveOptions().smoothing


def write_data(root: Path, media: SimpleNamespace) -> Path:
    lines = []
    for i in range(6):
        label = ("bird", "cat", "dog")[i % 3]
        rgb = two_colour_image(24 + i, 30)
        media.png(root / f"img/{i}.png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        media.audio(root / f"wav/{i}.wav", sine(300 + 100 * i, 16000, 0.3), 16000)
        line = {"id": f"s{i}", "split": "test", "label": label, "image": f"img/{i}.png"}
        if i != 4:  # one sample without audio: all its windows count as event windows
            line["audio"] = f"wav/{i}.wav"
        if i % 2 == 0:
            line["text"] = "abc"
        lines.append(line)
    media.manifest(root, lines)
    return root


def test_evaluate_live_bookkeeping_with_a_recording_scorer(
    tmp_path: Path, media: SimpleNamespace, make_spec: Any
) -> None:
    spec = make_spec()
    data = write_data(tmp_path, media)
    seen: list[SampleArrays] = []

    def always_bird(arrays: SampleArrays) -> np.ndarray:
        seen.append(arrays)
        scores = np.zeros((len(arrays), 3), np.float32)
        scores[:, 0] = 1.0
        return scores

    live = evaluate_live(spec, data, "test", always_bird, seed=0)
    assert live["n_samples"] == 6
    assert live["offline_accuracy"] == live["event_accuracy"] == 2 / 6
    assert live["gap"] == 0.0 and live["seed"] == 0
    # Per window, the birds (samples 0 and 3) count with their number of turns.
    records = read_manifest(data).split("test")
    turns = [
        len(build_sample(r, spec, sample_rng(0, r.id), LiveSettings()).scene.cuts) for r in records
    ]
    assert live["n_windows"] == sum(turns)
    assert live["accuracy"] == (turns[0] + turns[3]) / sum(turns)
    # One offline row per sample, then every turn once; batches stay small.
    rows = sum(len(a) for a in seen)
    assert rows == 6 + live["n_windows"] and max(len(a) for a in seen) <= 64
    assert 6 <= live["n_event_windows"] < live["n_windows"]
    # Live rows carry the camera frame at the model's size and the presence of each input.
    assert all(a.image.shape[1:] == (16, 24, 3) for a in seen)
    assert json.loads(json.dumps(live)) == live
    assert "per event" in format_live(live)
    again = evaluate_live(spec, data, "test", always_bird, seed=0)
    assert again == live
    assert evaluate_live(spec, data, "test", always_bird, seed=1)["n_windows"] != live["n_windows"]


def test_evaluate_live_refuses_regression(
    tmp_path: Path, media: SimpleNamespace, make_spec: Any
) -> None:
    with pytest.raises(ValueError, match="class labels"):
        evaluate_live(make_spec(task="regression"), write_data(tmp_path, media), "test", print)


def test_live_eval_and_the_runtime_evaluation_load_no_torch() -> None:
    code = (
        "import fusionedge.live_eval, fusionedge.runtime.onnx_eval, sys; "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-I", "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"
