"""LiveRunner over real sources: a video file or an MJPEG stream, and a WAV file."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from live_helpers import Clip, MjpegServer

from fusionedge.runtime import Predictor
from fusionedge.runtime.audio_sources import AudioSource, WavFileSource
from fusionedge.runtime.camera import CameraSource, Frame
from fusionedge.runtime.live import LiveOptions, LiveResult, LiveRunner

RED, BLUE = (40, 40, 220), (220, 60, 40)  # BGR, as in tests/support.py


@pytest.fixture(scope="module")
def predictor(live_model: Path) -> Iterator[Predictor]:
    with Predictor.from_path(live_model, providers="cpu", threads=1, spinning=False) as p:
        yield p


def run_for(runner: LiveRunner, seconds: float, on_result=None) -> list[tuple[float, LiveResult]]:
    """(wall time, result) pairs for `seconds`; on_result(elapsed, result) may act."""
    out: list[tuple[float, LiveResult]] = []
    start = time.monotonic()

    def callback(result: LiveResult) -> None:
        now = time.monotonic()
        out.append((now - start, result))
        if on_result is not None:
            on_result(now - start, result)

    runner.run(callback, duration_s=seconds)
    return out


def solid(bgr: tuple[int, int, int]) -> np.ndarray:
    image = np.zeros((48, 64, 3), dtype=np.uint8)
    image[:] = bgr
    return image


def test_file_camera_and_wav_give_fresh_fused_results(predictor: Predictor, live_clip: Clip):
    camera = CameraSource(str(live_clip.avi)).start()
    audio = WavFileSource(live_clip.wav).start()
    try:
        runner = LiveRunner(predictor, camera, audio, "red", LiveOptions(stale_ms=300))
        timed = run_for(runner, 2.0)
    finally:
        camera.stop()
        audio.stop()
    results = [r for _, r in timed]
    assert 40 <= len(results) <= 75  # about one per camera frame (30 fps)
    assert runner.results == len(results)
    # Once both inputs have arrived, every prediction uses both.
    first = next(i for i, r in enumerate(results) if r.present["image"] and r.present["audio"])
    assert first <= 3
    live = results[first:]
    for r in live:
        assert r.present == {"image": True, "audio": True, "text": True}
        assert 0 <= r.input_age_ms["image"] <= 300
        # (a block may land between the turn's clock read and the ring read, making the
        # reported age slightly negative: see test_audio_age_is_never_negative)
        assert -25 <= r.input_age_ms["audio"] <= 300
        assert set(r.latency_ms) == {"capture_to_result", "preprocess", "inference", "total"}
        assert r.latency_ms["capture_to_result"] >= r.latency_ms["inference"] > 0
        assert r.label in ("blue", "green", "red")
        assert sum(r.scores.values()) == pytest.approx(1.0, abs=1e-4)
        assert r.frame is not None and r.frame.shape == (240, 320, 3)
        assert r.overflows == 0
    # Frames arrive every 33 ms; the loop keeps up, so inputs are young.
    assert np.median([r.input_age_ms["image"] for r in live]) < 50
    assert np.median([r.input_age_ms["audio"] for r in live]) < 60
    ts = [r.t for r in results]
    assert all(b >= a for a, b in itertools.pairwise(ts)), "t went backwards"
    assert len(set(ts[first:])) >= 0.9 * len(live)  # mostly a new frame each time
    assert ts[-1] - ts[first] == pytest.approx(timed[-1][0] - timed[first][0], abs=0.15)
    drops = [r.dropped_frames for r in results]
    assert all(isinstance(d, int) for d in drops)
    assert drops == sorted(drops)


def test_slow_consumer_drops_frames_and_counts_them(predictor: Predictor, live_clip: Clip):
    camera = CameraSource(str(live_clip.avi)).start()
    audio = WavFileSource(live_clip.wav).start()
    try:
        runner = LiveRunner(predictor, camera, audio)
        timed = run_for(runner, 1.5, on_result=lambda *_: time.sleep(0.1))
        frames = camera.stats.frames
    finally:
        camera.stop()
        audio.stop()
    results = [r for _, r in timed]
    assert 8 <= len(results) <= 17  # ~9 per second
    last = results[-1].dropped_frames
    assert last >= 0.5 * frames  # two frames of three were never used
    # Every frame was used, dropped, or came after the last turn took its frame: the
    # newest one plus those captured during the last callback's 0.1 s (3 at 30 fps).
    assert last + len(results) >= frames - 5
    # each turn takes the newest frame, so the image it uses stays young
    assert max(r.input_age_ms["image"] for r in results[1:]) < 100


def test_stopped_camera_is_marked_missing_and_prediction_goes_on(
    predictor: Predictor, live_clip: Clip
) -> None:
    stale_ms = 300
    camera = CameraSource(str(live_clip.avi)).start()
    audio = WavFileSource(live_clip.wav).start()
    stopped_at: list[float] = []

    def stop_camera(elapsed: float, _: LiveResult) -> None:
        if elapsed >= 1.0 and not stopped_at:
            camera.stop()
            stopped_at.append(time.monotonic() - start)

    try:
        runner = LiveRunner(predictor, camera, audio, "red", LiveOptions(stale_ms=stale_ms))
        start = time.monotonic()
        timed = run_for(runner, 2.6, on_result=stop_camera)
    finally:
        camera.stop()
        audio.stop()
    cut = stopped_at[0]
    before = [r for t, r in timed if 0.3 < t < cut]
    just_after = [r for t, r in timed if cut < t < cut + stale_ms / 1000 - 0.1]
    missing = [r for t, r in timed if t > cut + stale_ms / 1000 + 0.15]
    assert before and all(r.present["image"] for r in before)
    # The last frame stays usable until it is stale_ms old...
    assert just_after and all(r.present["image"] for r in just_after)
    # ...then the image is missing and the other inputs carry on, at about idle_hz.
    assert len(missing) >= 8
    for r in missing:
        assert r.present == {"image": False, "audio": True, "text": True}
        assert r.input_age_ms["image"] > stale_ms
        assert r.input_age_ms["audio"] < 100
        assert r.frame is None
        assert r.label in ("blue", "green", "red")
    ts = [r.t for _, r in timed]
    assert all(b >= a for a, b in itertools.pairwise(ts)), "t went backwards"


def test_mjpeg_camera_dies_and_comes_back_during_the_loop(
    predictor: Predictor, live_clip: Clip, mjpeg_server: MjpegServer
) -> None:
    stale_ms = 300
    camera = CameraSource(mjpeg_server.url, timeout_ms=1000, backoff_s=(0.1, 0.4)).start()
    audio = WavFileSource(live_clip.wav).start()
    events: dict[str, float] = {}

    def chaos(elapsed: float, _: LiveResult) -> None:
        if elapsed >= 1.0 and "kill" not in events:
            mjpeg_server.kill()
            events["kill"] = time.monotonic() - start
        if elapsed >= 2.5 and "back" not in events:
            mjpeg_server.start()
            events["back"] = time.monotonic() - start

    try:
        runner = LiveRunner(predictor, camera, audio, options=LiveOptions(stale_ms=stale_ms))
        start = time.monotonic()
        timed = run_for(runner, 4.5, on_result=chaos)
    finally:
        camera.stop()
        audio.stop()
    kill, back = events["kill"], events["back"]
    during = [r for t, r in timed if kill + stale_ms / 1000 + 0.15 < t < back]
    assert len(during) >= 8, "predictions stopped while the camera was away"
    assert all(not r.present["image"] and r.present["audio"] for r in during)
    after = [r for t, r in timed if t > back]
    recovered = [r for r in after if r.present["image"]]
    assert recovered, f"the stream never came back: {camera.stats}"
    assert camera.stats.reopens > 0
    assert recovered[-1].input_age_ms["image"] < 100
    assert [r.present["text"] for _, r in timed] == [False] * len(timed)


def test_step_marks_an_old_frame_missing(predictor: Predictor) -> None:
    runner = LiveRunner(predictor, options=LiveOptions(stale_ms=200))
    now = time.monotonic_ns()
    fresh = runner.step(Frame(solid(RED), now, 0))
    assert fresh.present == {"image": True, "audio": False, "text": False}
    assert fresh.t == pytest.approx(now / 1e9)
    old = runner.step(Frame(solid(RED), now - 500_000_000, 1))
    assert old.present["image"] is False
    assert old.input_age_ms["image"] >= 500
    assert old.input_age_ms["audio"] is None
    assert old.frame is None
    # Without any input the prediction still comes (the model's placeholders).
    assert runner.step().present == {"image": False, "audio": False, "text": False}


def test_audio_that_stopped_is_marked_missing(predictor: Predictor, tmp_path: Path) -> None:
    import soundfile as sf

    wav = tmp_path / "short.wav"
    sf.write(str(wav), np.zeros(1600, np.float32), 16000)  # 0.1 s
    with WavFileSource(wav) as audio:
        assert audio.finished.wait(2.0)
        runner = LiveRunner(predictor, audio=audio, options=LiveOptions(stale_ms=200))
        assert runner.step().present["audio"] is True
        time.sleep(0.3)
        r = runner.step()
    assert r.present["audio"] is False
    assert r.input_age_ms["audio"] >= 300


class RacingAudio(AudioSource):
    """An audio source whose capture callback delivers a block while the loop is
    mid-turn (after the turn read its clock, before it read the ring)."""

    def __init__(self) -> None:
        super().__init__(16000, 1.0)
        self.write(np.zeros(320, np.float32), time.monotonic_ns())

    def window(self, num_samples: int, sample_rate: int, end_ns: int | None = None):
        time.sleep(0.002)
        self.write(np.zeros(320, np.float32), time.monotonic_ns())
        return super().window(num_samples, sample_rate, end_ns)


def test_audio_age_is_never_negative(predictor: Predictor) -> None:
    runner = LiveRunner(predictor, audio=RacingAudio())
    ages = [runner.step().input_age_ms["audio"] for _ in range(3)]
    assert min(ages) >= 0, ages


def test_text_callable_and_empty_text(predictor: Predictor) -> None:
    texts = iter(["red", "", None, "blue"])
    runner = LiveRunner(predictor, text=lambda: next(texts))
    present = [runner.step().present["text"] for _ in range(4)]
    assert present == [True, False, False, True]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"stale_ms": 0},
        {"stale_ms": -5},
        {"rate_hz": 0},
        {"rate_hz": -1.0},
        {"idle_hz": 0},
        {"smoothing": -0.1},
        {"smoothing": 1.0},
        {"smoothing": 1.5},
        {"audio_hop_ms": 0},
        {"audio_hop_ms": float("nan")},
    ],
)
def test_live_options_reject_bad_values(kwargs: dict) -> None:
    with pytest.raises(ValueError, match="stale_ms, rate_hz, idle_hz, startup_s and audio_hop"):
        LiveOptions(**kwargs)


def test_live_options_accept_good_values() -> None:
    assert LiveOptions(stale_ms=1, rate_hz=None, idle_hz=0.5, smoothing=0.99).smoothing == 0.99
    assert LiveOptions(rate_hz=120).rate_hz == 120


@pytest.mark.parametrize("kwargs", [{"stale_ms": float("nan")}, {"idle_hz": float("nan")}])
def test_live_options_reject_nan(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        LiveOptions(**kwargs)


def test_runner_rejects_inputs_the_model_does_not_take(
    predictor: Predictor, live_clip: Clip
) -> None:
    spec = predictor.spec
    no_audio = spec.replace(
        modalities=("image", "text"),
        audio=None,
        encoders={m: e for m, e in spec.encoders.items() if m != "audio"},
    )
    stub = SimpleNamespace(spec=no_audio)
    audio = WavFileSource(live_clip.wav)  # not started: only its type matters here
    with pytest.raises(ValueError, match="no audio"):
        LiveRunner(stub, audio=audio)  # type: ignore[arg-type]
    no_text = spec.replace(
        modalities=("image", "audio"),
        text=None,
        encoders={m: e for m, e in spec.encoders.items() if m != "text"},
    )
    with pytest.raises(ValueError, match="no text"):
        LiveRunner(SimpleNamespace(spec=no_text), text="red")  # type: ignore[arg-type]


def test_rate_hz_caps_the_prediction_rate(predictor: Predictor, live_clip: Clip) -> None:
    camera = CameraSource(str(live_clip.avi)).start()
    try:
        runner = LiveRunner(predictor, camera, options=LiveOptions(rate_hz=5))
        timed = run_for(runner, 1.6)
    finally:
        camera.stop()
    times = [t for t, _ in timed]
    assert 6 <= len(times) <= 10  # 5 per second, not 30
    assert min(np.diff(times)) >= 0.18
    assert all(r.present["image"] for _, r in timed[1:])


def test_idle_hz_paces_a_loop_without_camera(predictor: Predictor, live_clip: Clip) -> None:
    with WavFileSource(live_clip.wav) as audio:
        runner = LiveRunner(predictor, audio=audio, options=LiveOptions(idle_hz=20))
        timed = run_for(runner, 1.0)
    assert 16 <= len(timed) <= 23
    assert all(r.present["audio"] for _, r in timed[2:])
    assert all(r.input_age_ms["image"] is None for _, r in timed)


def test_smoothing_blends_consecutive_scores(predictor: Predictor) -> None:
    frames = [solid(RED if i % 2 else BLUE) for i in range(8)]

    def scores(smoothing: float) -> np.ndarray:
        runner = LiveRunner(predictor, options=LiveOptions(smoothing=smoothing))
        rows = []
        for i, image in enumerate(frames):
            r = runner.step(Frame(image, time.monotonic_ns(), i))
            rows.append([r.scores[label] for label in predictor.spec.labels])
        return np.array(rows)

    raw, smooth = scores(0.0), scores(0.8)
    raw_jumps = np.abs(np.diff(raw, axis=0)).sum(axis=1)
    assert raw_jumps.min() > 0.02, "red and blue frames should score differently"
    np.testing.assert_allclose(smooth[0], raw[0], atol=1e-6)
    for k in range(1, len(frames)):
        np.testing.assert_allclose(smooth[k], 0.8 * smooth[k - 1] + 0.2 * raw[k], atol=1e-5)
    smooth_jumps = np.abs(np.diff(smooth, axis=0)).sum(axis=1)
    assert smooth_jumps.mean() < 0.5 * raw_jumps.mean()


def test_a_frame_prepared_on_arrival_is_used_as_it_is(predictor: Predictor) -> None:
    runner = LiveRunner(predictor)
    blue = runner.frame_preparer(solid(BLUE))
    assert np.array_equal(blue, predictor.prepare(image=solid(BLUE), color_order="bgr")["image"])
    now = time.monotonic_ns()
    # A red frame that carries the blue picture as prepared by this runner: the turn runs
    # the prepared picture, proof that it did not prepare the frame again.
    mine = runner.step(Frame(solid(RED), now, 0, blue, runner.frame_preparer))
    assert mine.label == "blue"
    # Prepared by something else (another runner, another model): prepared again.
    theirs = runner.step(Frame(solid(RED), now, 1, blue, lambda image: image))
    assert theirs.label == "red"
