"""CaptureSource (runtime/capture.py) and the camera and microphone built on it, with fake
devices: reopen with growing waits, errors reported (stats and a WARNING with the cause)
and never ending capture silently, and the thread's lifetime. Real capture stacks (MJPEG
over HTTP, a PulseAudio microphone) are exercised in tests/live."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from fusionedge.runtime import audio_sources
from fusionedge.runtime.audio_sources import AudioStats, MicrophoneSource
from fusionedge.runtime.camera import CameraSource
from fusionedge.runtime.capture import MAX_ERRORS, Backoff, CaptureSource, CaptureStats

BACKOFF = (0.01, 0.04)


def wait_for(condition: Callable[[], bool], timeout: float = 3.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.005)
    return condition()


class RecordingBackoff(Backoff):
    """A Backoff that remembers every wait it handed out."""

    def __init__(self, first: float, longest: float) -> None:
        super().__init__(first, longest)
        self.waits: list[float] = []

    def advance(self) -> float:
        wait = super().advance()
        self.waits.append(wait)
        return wait


def record_waits(source: CaptureSource) -> list[float]:
    source._backoff = RecordingBackoff(*source.backoff_s)
    return source._backoff.waits


def warnings_from(caplog: pytest.LogCaptureFixture, logger: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == logger and r.levelno == logging.WARNING]


# ---------------------------------------------------------------------- Backoff, stats


def test_backoff_doubles_up_to_the_longest_wait_and_resets() -> None:
    backoff = Backoff(0.25, 1.0)
    assert [backoff.advance() for _ in range(5)] == [0.25, 0.5, 1.0, 1.0, 1.0]
    backoff.reset()
    assert backoff.advance() == 0.25


@pytest.mark.parametrize("bounds", [(0.0, 1.0), (-1.0, 1.0), (2.0, 1.0)])
def test_backoff_rejects_bounds_that_would_spin_or_shrink(bounds: tuple[float, float]) -> None:
    with pytest.raises(ValueError, match="backoff"):
        Backoff(*bounds)


def test_stats_keep_the_newest_errors() -> None:
    stats = CaptureStats()
    for i in range(MAX_ERRORS + 5):
        stats.add_error(f"error {i}")
    assert stats.errors == [f"error {i}" for i in range(5, MAX_ERRORS + 5)]


def test_audio_restarts_are_its_reopens() -> None:
    stats = AudioStats()
    stats.reopens += 2
    assert stats.restarts == 2


# ---------------------------------------------------------------------- the base


class FlakySource(CaptureSource):
    """Its device fails to open `failures` times, then delivers until stopped."""

    kind = "flaky"

    def __init__(self, failures: int, gives_up: bool = False) -> None:
        super().__init__(CaptureStats(), BACKOFF, name="flaky")
        self.failures, self.gives_up = failures, gives_up
        self.attempts: list[float] = []
        self.delivering = threading.Event()

    def _capture(self) -> None:
        self.attempts.append(time.monotonic())
        if len(self.attempts) <= self.failures:
            raise OSError(f"device busy (attempt {len(self.attempts)})")
        self.stats.opens += 1
        self.delivering.set()
        self._stop.wait()

    def _gives_up(self, error: Exception) -> bool:
        return self.gives_up


def test_failed_opens_are_retried_with_growing_waits(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    source = FlakySource(failures=4)
    waits = record_waits(source)
    with source:
        assert source.delivering.wait(3.0), source.stats
    assert waits == [0.01, 0.02, 0.04, 0.04]
    gaps = np.diff(source.attempts)
    assert all(gap >= wait * 0.9 for gap, wait in zip(gaps, waits, strict=True)), gaps
    assert source.stats.reopens == 4
    assert source.stats.opens == 1
    assert len(source.stats.errors) == 4
    assert all("device busy" in e and "reopening in" in e for e in source.stats.errors)


def test_an_error_in_the_capture_loop_is_logged_with_its_cause(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    with FlakySource(failures=2) as source:
        assert source.delivering.wait(3.0), source.stats
    records = warnings_from(caplog, "fusionedge.runtime.capture")
    assert len(records) == 2
    assert all(r.getMessage().startswith("flaky: capture failed: OSError") for r in records)
    assert all(r.exc_info and isinstance(r.exc_info[1], OSError) for r in records)
    assert "device busy (attempt 1)" in records[0].getMessage()


def test_a_source_that_gives_up_ends_its_thread(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    source = FlakySource(failures=1, gives_up=True).start()
    try:
        assert source._thread is not None
        source._thread.join(2.0)
        assert not source._thread.is_alive()
    finally:
        source.stop()
    assert len(source.attempts) == 1
    assert source.stats.reopens == 0
    assert source.stats.errors == ["capture failed: OSError('device busy (attempt 1)'); giving up"]
    assert len(warnings_from(caplog, "fusionedge.runtime.capture")) == 1


def test_start_returns_the_source_and_stop_joins_its_thread() -> None:
    source = FlakySource(failures=0)
    assert source.start() is source
    assert source.delivering.wait(2.0)
    thread = source._thread
    assert thread is not None and thread.is_alive() and thread.name == "flaky:flaky"
    source.stop()
    assert source.stopping
    assert not thread.is_alive()


def test_context_manager_starts_and_stops() -> None:
    with FlakySource(failures=0) as source:
        assert source.delivering.wait(2.0)
        thread = source._thread
        assert thread is not None and thread.is_alive()
    assert not thread.is_alive()


def test_stop_interrupts_a_backoff_wait() -> None:
    source = FlakySource(failures=1000)
    source._backoff = Backoff(30.0, 30.0)
    source.start()
    assert wait_for(lambda: len(source.stats.errors) == 1)
    t = time.monotonic()
    source.stop()
    assert time.monotonic() - t < 1.0
    assert source._thread is not None and not source._thread.is_alive()
    assert source.stats.reopens == 0  # the reopen it waited for was never tried


def test_start_fails_in_the_callers_thread_when_prepare_fails() -> None:
    class Unpreparable(FlakySource):
        def _prepare(self) -> None:
            raise ImportError("no capture library")

    source = Unpreparable(failures=0)
    with pytest.raises(ImportError, match="no capture library"):
        source.start()
    assert source._thread is None


# ---------------------------------------------------------------------- camera


class FakeCapture:
    """Stands in for cv2.VideoCapture: distinct frames, then an error if told to."""

    def __init__(self, frames: int | None = None, error: Exception | None = None) -> None:
        self.left, self.error, self.released, self.n = frames, error, False, 0

    def get(self, prop: int) -> float:
        return 0.0

    def read(self) -> tuple[bool, np.ndarray | None]:
        if self.left is not None:
            if self.left <= 0:
                if self.error is not None:
                    raise self.error
                return False, None
            self.left -= 1
        self.n += 1
        time.sleep(0.002)
        return True, np.full((8, 8, 3), self.n % 256, np.uint8)

    def release(self) -> None:
        self.released = True


def fake_opens(
    monkeypatch: pytest.MonkeyPatch, *results: FakeCapture | None
) -> list[FakeCapture | None]:
    """Makes CameraSource._open return `results` in turn, then healthy captures."""
    handed: list[FakeCapture | None] = []

    def fake_open(self: CameraSource) -> FakeCapture | None:
        cap = results[len(handed)] if len(handed) < len(results) else FakeCapture()
        handed.append(cap)
        return cap

    monkeypatch.setattr(CameraSource, "_open", fake_open)
    return handed


def test_camera_that_fails_to_open_reopens_with_growing_waits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    handed = fake_opens(monkeypatch, None, None, None)
    camera = CameraSource("http://camera.invalid/stream", backoff_s=BACKOFF)
    waits = record_waits(camera)
    with camera:
        assert wait_for(lambda: camera.stats.frames >= 5), camera.stats
    assert waits == [0.01, 0.02, 0.04]
    assert camera.stats.reopens == 3
    assert camera.stats.opens == 1
    assert sum("cannot open" in e for e in camera.stats.errors) == 3
    assert handed[-1] is not None and handed[-1].released


def test_a_camera_that_stays_away_warns_once_and_counts_the_rest(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Retried every second for as long as it is away, a camera would log a warning a
    second; the same message is counted instead, and the count is logged before the
    next different warning."""
    caplog.set_level(logging.WARNING)
    fake_opens(monkeypatch, *[None] * 12, FakeCapture(frames=3))
    camera = CameraSource("http://camera.invalid/stream", backoff_s=(0.01, 0.01))
    with camera:
        assert wait_for(lambda: camera.stats.frames >= 3), camera.stats
        assert wait_for(lambda: "stopped delivering" in camera.stats.errors[-1])
    messages = [r.getMessage() for r in warnings_from(caplog, "fusionedge.runtime.camera")]
    assert sum("cannot open" in m for m in messages) == 1, messages
    assert "camera: the warning before came 11 times more" in messages, messages
    assert camera.stats.reopens >= 12  # every attempt was made, and counted


def test_camera_error_is_reported_and_capture_goes_on(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    failing = FakeCapture(frames=3, error=RuntimeError("backend failure injected"))
    fake_opens(monkeypatch, failing)
    camera = CameraSource("http://camera.invalid/stream", backoff_s=BACKOFF)
    with camera:
        assert wait_for(lambda: camera.stats.frames >= 10), camera.stats
        assert not camera.finished.is_set()
    assert failing.released
    assert camera.stats.reopens == 1
    assert camera.stats.opens >= 2
    assert any("backend failure injected" in e for e in camera.stats.errors)
    records = warnings_from(caplog, "fusionedge.runtime.camera")
    assert any(r.exc_info and isinstance(r.exc_info[1], RuntimeError) for r in records)
    frame = camera.latest()
    assert frame is not None and frame.index == camera.stats.frames - 1  # indices go on


def test_camera_backoff_starts_over_once_frames_arrive(monkeypatch: pytest.MonkeyPatch) -> None:
    stopping = FakeCapture(frames=3)  # then read() fails: the stream stopped
    fake_opens(monkeypatch, None, None, stopping, None, None)
    camera = CameraSource("http://camera.invalid/stream", backoff_s=BACKOFF)
    waits = record_waits(camera)
    with camera:
        assert wait_for(lambda: camera.stats.frames >= 5), camera.stats
    assert waits == [0.01, 0.02, 0.01, 0.02]
    assert camera.stats.reopens == 5  # four failed opens and the stream that stopped
    assert any("stopped delivering" in e for e in camera.stats.errors)


def test_camera_file_that_raises_gives_up(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    video = tmp_path / "clip.avi"
    video.write_bytes(b"not really a video")
    fake_opens(monkeypatch, FakeCapture(frames=2, error=RuntimeError("corrupt packet")))
    camera = CameraSource(str(video), realtime=False, backoff_s=BACKOFF)
    with camera:
        assert camera.finished.wait(3.0)
    assert camera.stats.frames == 2
    assert camera.stats.reopens == 0
    assert len(camera.stats.errors) == 1
    assert "corrupt packet" in camera.stats.errors[0]
    assert "giving up" in camera.stats.errors[0]


# ---------------------------------------------------------------------- microphone


class FakePortAudioError(Exception):
    pass


class FakeStream:
    """A sounddevice.InputStream that opens but never delivers."""

    def __init__(self, **kwargs: object) -> None:
        self.kwargs, self.active, self.closed = kwargs, False, False

    def start(self) -> None:
        self.active = True

    def close(self, ignore_errors: bool = False) -> None:
        self.active, self.closed = False, True


def fake_sounddevice(
    monkeypatch: pytest.MonkeyPatch,
    check: Callable[..., None] = lambda **kwargs: None,
    open_errors: dict[int, Exception] | None = None,
) -> list[FakeStream]:
    """Replaces sounddevice for MicrophoneSource; the n-th stream opened (from 0) raises
    open_errors[n]. Returns the streams opened."""
    streams: list[FakeStream] = []
    attempts = [0]

    def input_stream(**kwargs: object) -> FakeStream:
        attempts[0] += 1
        error = (open_errors or {}).get(attempts[0] - 1)
        if error is not None:
            raise error
        streams.append(FakeStream(**kwargs))
        return streams[-1]

    sd = SimpleNamespace(
        PortAudioError=FakePortAudioError,
        check_input_settings=check,
        query_devices=lambda device, kind: {"name": "fake mic", "default_samplerate": 48000.0},
        InputStream=input_stream,
    )
    monkeypatch.setattr(audio_sources, "import_sounddevice", lambda: sd)
    return streams


@pytest.mark.parametrize(
    "refusal", [FakePortAudioError("Invalid sample rate"), ValueError("bad samplerate")]
)
def test_microphone_refusing_the_rate_opens_at_its_own(
    monkeypatch: pytest.MonkeyPatch, refusal: Exception
) -> None:
    def check(**kwargs: object) -> None:
        raise refusal

    fake_sounddevice(monkeypatch, check=check)
    mic = MicrophoneSource("default", 16000)
    assert mic.device is None
    assert mic.device_rate == 48000


def test_microphone_check_error_that_is_no_refusal_propagates(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def check(**kwargs: object) -> None:
        raise TypeError("a bug, not a refused rate")

    fake_sounddevice(monkeypatch, check=check)
    with pytest.raises(TypeError, match="a bug"):
        MicrophoneSource("default", 16000)


def test_silent_microphone_is_reopened_and_failed_reopens_reported(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    errors = {1: FakePortAudioError("device unavailable"), 2: FakePortAudioError("still gone")}
    streams = fake_sounddevice(monkeypatch, open_errors=errors)
    mic = MicrophoneSource("3", 16000, stale_after_s=0.1, backoff_s=BACKOFF)
    assert mic.device == 3
    with mic:
        assert len(streams) == 1 and streams[0].active  # opened in start()
        assert wait_for(lambda: len(streams) >= 2), mic.stats
        thread = mic._thread
    assert thread is not None and not thread.is_alive()
    assert all(s.closed for s in streams)
    assert mic.stats.restarts >= 3  # the stall, then two failed opens
    assert mic.stats.opens == len(streams)
    assert any("no audio" in e for e in mic.stats.errors)
    assert sum("device unavailable" in e or "still gone" in e for e in mic.stats.errors) == 2
    records = warnings_from(caplog, "fusionedge.runtime.audio_sources")
    failed = [r for r in records if r.exc_info]
    assert [str(r.exc_info[1]) for r in failed] == ["device unavailable", "still gone"]
