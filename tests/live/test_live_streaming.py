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
    """A replayed stream: 30 frames per second, audio moving on in hops of 6 DFT hops,
    text changing once. Encoders run at their own rates, the log-mel of each new hop only;
    every turn's scores equal the single file's on the same inputs."""
    spec = split.spec
    rate, n = spec.audio.sample_rate, spec.audio.num_samples
    streaming = StreamingEncoder(split, audio_hop_s=0.1)
    track = tone(400.0, rate * 3, rate) + tone(1000.0, rate * 3, rate, 1.0) * 0.3
    hop = 6 * spec.audio.hop_length
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
        streaming.update_audio_window(end, window, end * 1_000_000_000 // rate)
        streaming.update_text(text, lambda s=text: split.prepare(text=s)["text"])
        got, _ = streaming.scores({"image": True, "audio": True, "text": True})
        expected = single.predict(
            image=frame, color_order="bgr", audio=window, sample_rate=rate, text=text
        )
        assert np.abs(got - np.array(list(expected.scores.values()))).max() <= 1e-4
    windows = len({(i * rate // 30) // hop for i in range(60)})
    assert streaming.stats.runs == {"image": 60, "audio": windows, "text": 2, "fusion": 60}
    assert streaming.stats.reuses == {"audio": 60 - windows, "text": 58}
    # The first window's frames in full, then 6 new frames per hop.
    assert streaming.stats.logmel_frames == spec.audio.num_frames + 6 * (windows - 1)


def test_a_window_that_moved_by_part_of_a_dft_hop_is_computed_whole(split: Predictor) -> None:
    spec = split.spec.audio
    streaming = StreamingEncoder(split)
    track = tone(400.0, spec.num_samples * 2, spec.sample_rate)
    for end in (spec.num_samples, spec.num_samples + spec.hop_length // 2):
        streaming.update_audio_window(end, track[end - spec.num_samples : end], end)
    assert streaming.stats.logmel_frames == 2 * spec.num_frames
    with pytest.raises(ValueError, match=r"audio window: expected float32 \["):
        streaming.update_audio_window(1, track[:10], 1)


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


def test_live_loop_cuts_audio_by_sample_index_at_the_model_rate(
    split: Predictor, live_clip: Clip, tmp_path: Path
) -> None:
    """A microphone at the model's rate (8 kHz here): each hop computes the log-mel of the
    new audio only."""
    import soundfile as sf
    import soxr

    pcm, rate = sf.read(str(live_clip.wav), dtype="float32")
    model_rate = split.spec.audio.sample_rate
    wav = tmp_path / "clip8k.wav"
    sf.write(str(wav), soxr.resample(pcm, rate, model_rate), model_rate)
    audio = WavFileSource(wav, loop=True).start()
    try:
        runner = LiveRunner(split, None, audio, None, LiveOptions(audio_hop_ms=100))
        results = []
        runner.run(results.append, duration_s=1.5)
    finally:
        audio.stop()
    spec = split.spec.audio
    stats = runner.streaming.stats
    assert runner._hop_samples == 6 * spec.hop_length  # 100 ms at 8 kHz, in DFT hops
    assert stats.runs["audio"] >= 8
    # All but the first window (and any after a gap) were computed incrementally.
    assert stats.logmel_frames < spec.num_frames * stats.runs["audio"] / 2
    live = [r for r in results if r.present["audio"]]
    assert len(live) >= 0.8 * len(results)
    assert all(0 <= r.input_age_ms["audio"] <= 100 + 60 for r in live)


def test_fusionedge_run_takes_a_split_folder(live_split_model: Path, live_clip: Clip) -> None:
    import json
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "fusionedge.cli", "run", str(live_split_model)]
    cmd += ["--camera", str(live_clip.avi), "--mic", str(live_clip.wav), "--text", "red"]
    cmd += ["--headless", "--providers", "cpu", "--duration", "2", "--audio-hop-ms", "50"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [json.loads(x) for x in done.stdout.splitlines() if x.strip()]
    assert len(lines) >= 30
    fused = [x for x in lines if all(x["present"].values())]
    assert len(fused) >= 0.8 * len(lines)
    assert all(abs(sum(x["scores"].values()) - 1) < 1e-4 for x in lines)
