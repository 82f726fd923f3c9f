"""Split models in the live loop: each encoder runs only when its modality has new data."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from live_helpers import Clip

from fusionedge.runtime import Predictor
from fusionedge.runtime.audio_sources import WavFileSource
from fusionedge.runtime.camera import CameraSource
from fusionedge.runtime.live import LiveOptions, LiveRunner
from fusionedge.runtime.streaming import StreamingEncoder

RED = (40, 40, 220)  # BGR, as in tests/support.py


@pytest.fixture(scope="module")
def single(live_model: Path) -> Iterator[Predictor]:
    with Predictor.from_path(live_model, providers="cpu", threads=1, spinning=False) as p:
        yield p


@pytest.fixture(scope="module")
def split(live_split_model: Path) -> Iterator[Predictor]:
    with Predictor.from_path(live_split_model, providers="cpu", threads=1, spinning=False) as p:
        yield p


def tone(hz: float, n: int, rate: int, phase: float = 0.0) -> np.ndarray:
    return (0.4 * np.sin(2 * np.pi * hz * np.arange(n) / rate + phase)).astype(np.float32)


def test_streaming_encoder_caches_and_matches_the_single_file(
    single: Predictor, split: Predictor
) -> None:
    """A replayed stream: 30 frames per second, audio moving 1/30 s per frame, text
    changing once. Encoders run at their own rates; every turn's scores equal the single
    file's on the same inputs."""
    spec = split.spec
    rate, n = spec.audio.sample_rate, spec.audio.num_samples
    streaming = StreamingEncoder(split, audio_hop_s=0.1)
    track = tone(400.0, rate * 3, rate)
    hop = rate // 10
    frames = [np.full((30, 40, 3), RED, np.uint8) + i for i in range(30)]
    for i in range(60):  # two seconds at 30 fps
        t_ns = i * 1_000_000_000 // 30
        frame = frames[i % 30]
        end = (i * rate // 30) // hop * hop + n  # the window of the last hop boundary
        window = track[end - n : end]
        text = "red" if i < 45 else "blue"
        streaming.update_image(
            t_ns, lambda f=frame: split.prepare(image=f, color_order="bgr")["image"]
        )
        if streaming.audio_due(end * 1_000_000_000 // rate):
            streaming.update_audio(
                end * 1_000_000_000 // rate,
                lambda w=window: split.prepare(audio=w, sample_rate=rate)["audio"],
            )
        streaming.update_text(text, lambda s=text: split.prepare(text=s)["text"])
        got, _ = streaming.scores({"image": True, "audio": True, "text": True})
        expected = single.predict(
            image=frame, color_order="bgr", audio=window, sample_rate=rate, text=text
        )
        assert np.abs(got - np.array(list(expected.scores.values()))).max() <= 1e-4
    assert streaming.stats.runs == {"image": 60, "audio": 20, "text": 2, "fusion": 60}
    assert streaming.stats.reuses == {"text": 58}  # audio is only updated when due


def test_missing_modalities_use_the_placeholders(single: Predictor, split: Predictor) -> None:
    streaming = StreamingEncoder(split)
    frame = np.full((30, 40, 3), RED, np.uint8)
    streaming.update_image(1, lambda: split.prepare(image=frame, color_order="bgr")["image"])
    got, _ = streaming.scores({"image": True, "audio": True, "text": False})  # no audio yet
    expected = single.predict(image=frame, color_order="bgr")
    assert np.abs(got - np.array(list(expected.scores.values()))).max() <= 1e-4
    nothing, _ = streaming.scores({"image": False})
    empty = single.predict()
    assert np.abs(nothing - np.array(list(empty.scores.values()))).max() <= 1e-4


def test_streaming_needs_a_split_model(single: Predictor) -> None:
    with pytest.raises(ValueError, match=r"single-file model.*--split"):
        StreamingEncoder(single)


def test_live_loop_on_a_split_model_encodes_at_each_modality_rate(
    split: Predictor, live_clip: Clip
) -> None:
    camera = CameraSource(str(live_clip.avi)).start()
    audio = WavFileSource(live_clip.wav, loop=True).start()
    try:
        runner = LiveRunner(split, camera, audio, "red", LiveOptions(audio_hop_ms=100))
        results = []
        start = time.monotonic()
        runner.run(results.append, duration_s=2.0)
        elapsed = time.monotonic() - start
    finally:
        camera.stop()
        audio.stop()
    assert runner.streaming is not None
    runs = runner.streaming.stats.runs
    live = [r for r in results if r.present["image"] and r.present["audio"]]
    assert len(live) >= 0.8 * len(results) > 30
    # (labels follow the clip's samples; that scores equal the single file's on the same
    # inputs is the replayed-stream test above)
    assert runs["fusion"] == len(results)
    # One image encoding per frame used, audio about every 100 ms, text once.
    assert runs["image"] == len({r.t for r in results if r.present["image"]})
    assert 0.7 * elapsed * 10 <= runs["audio"] <= elapsed * 10 + 3
    assert runs["text"] == 1
    for r in live:
        assert 0 <= r.input_age_ms["audio"] <= 100 + 60  # a hop plus a block or two
        assert r.latency_ms["inference"] > 0
        assert sum(r.scores.values()) == pytest.approx(1.0, abs=1e-4)
