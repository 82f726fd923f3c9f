"""CameraSource on real capture stacks: MJPG video files and an MJPEG HTTP stream."""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from live_helpers import (
    FaultyMjpegServer,
    MjpegServer,
    frame_number,
    textured_jpegs,
    wait_for,
    write_avi,
)

from fusionedge.runtime import mjpeg
from fusionedge.runtime.camera import CameraSource, Frame

FPS = 15.0
FRAMES = 24  # 1.6 s at FPS


@pytest.fixture(scope="module")
def avi(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_avi(tmp_path_factory.mktemp("camera") / "numbered.avi", FRAMES, FPS)


@pytest.fixture(scope="module")
def short_avi(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_avi(tmp_path_factory.mktemp("camera_short") / "short.avi", 8, 20.0)


def take_all(camera: CameraSource, seconds: float) -> list[Frame]:
    """Takes every new frame for up to `seconds`, or until a file has finished and its
    last frame was taken."""
    frames: list[Frame] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        frame = camera.take(timeout=0.1)
        if frame is not None:
            frames.append(frame)
        elif camera.finished.is_set():
            break
    return frames


def test_written_file_is_what_the_tests_expect(avi: Path) -> None:
    cap = cv2.VideoCapture(str(avi))
    assert cap.isOpened()
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(FPS)
    numbers = []
    while True:
        ok, image = cap.read()
        if not ok:
            break
        numbers.append(frame_number(image))
    cap.release()
    assert numbers == list(range(FRAMES))


def test_realtime_file_plays_at_its_frame_rate(avi: Path) -> None:
    camera = CameraSource(str(avi), realtime=True)
    assert camera.is_file
    t0 = time.monotonic()
    with camera:
        frames = take_all(camera, 10.0)
        assert camera.finished.wait(2.0)
        elapsed = time.monotonic() - t0
    expected = FRAMES / FPS
    assert expected - 0.1 < elapsed < expected + 1.0
    assert camera.stats.frames == FRAMES
    # A consumer faster than the camera takes every frame, in order, none dropped.
    assert [f.index for f in frames] == list(range(FRAMES))
    assert [frame_number(f.image) for f in frames] == list(range(FRAMES))
    assert camera.stats.dropped == 0
    gaps = np.diff([f.t_ns for f in frames]) / 1e9
    assert np.all(gaps > 0)
    assert np.median(gaps) == pytest.approx(1 / FPS, rel=0.25)
    assert frames[0].image.shape == (48, 64, 3)
    assert frames[0].image.dtype == np.uint8


def test_file_not_realtime_decodes_faster_and_finishes(avi: Path) -> None:
    camera = CameraSource(str(avi), realtime=False)
    t0 = time.monotonic()
    with camera:
        assert camera.finished.wait(5.0)
        elapsed = time.monotonic() - t0
        assert elapsed < 0.5 * FRAMES / FPS
        assert camera.stats.frames == FRAMES
        # Nobody took anything: every frame but the newest was replaced unread.
        assert camera.stats.dropped == FRAMES - 1
        last = camera.latest()
        assert last is not None and last.index == FRAMES - 1
        assert frame_number(last.image) == FRAMES - 1
        # take() hands out the newest frame once, then nothing newer arrives.
        assert camera.take(timeout=0.5) is last
        t = time.monotonic()
        assert camera.take(timeout=0.3) is None
        assert time.monotonic() - t >= 0.25  # it waited for the timeout
        assert camera.latest() is last  # latest() still shows it


def test_loop_restarts_the_file(short_avi: Path) -> None:
    camera = CameraSource(str(short_avi), realtime=True, loop=True)
    with camera:
        frames = take_all(camera, 1.3)  # 8 frames at 20 fps = 0.4 s per pass
        assert not camera.finished.is_set()
    numbers = [frame_number(f.image) for f in frames]
    assert camera.stats.frames >= 16
    assert numbers.count(0) >= 2, numbers  # the first frame came round again
    assert any(b < a for a, b in itertools.pairwise(numbers)), numbers
    indices = [f.index for f in frames]
    assert indices == sorted(set(indices)), "frame indices keep counting across loops"


def test_take_returns_only_newer_frames_and_counts_unread_ones_as_dropped(avi: Path) -> None:
    with CameraSource(str(avi), realtime=True) as camera:
        first = camera.take(timeout=2.0)
        assert first is not None
        second = camera.take(timeout=2.0)
        assert second is not None
        assert second.index > first.index and second.t_ns > first.t_ns
        dropped = camera.stats.dropped
        time.sleep(0.5)  # ~7 frames arrive unread
        third = camera.take(timeout=2.0)
        assert third is not None
        skipped = third.index - second.index - 1
        assert skipped >= 4
        assert camera.stats.dropped - dropped == skipped
        latest = camera.latest()
        assert latest is not None and latest.index >= third.index


def test_frames_taken_plus_dropped_add_up(avi: Path) -> None:
    """A slow consumer: every captured frame is either taken or counted as dropped."""
    with CameraSource(str(avi), realtime=True) as camera:
        taken = []
        while not camera.finished.is_set():
            frame = camera.take(timeout=0.2)
            if frame is not None:
                taken.append(frame.index)
            time.sleep(0.15)
        last = camera.take(timeout=0.0)
        if last is not None:
            taken.append(last.index)
    assert len(set(taken)) == len(taken)
    assert camera.stats.frames == FRAMES
    assert camera.stats.dropped > 0
    assert len(taken) + camera.stats.dropped == FRAMES


def test_stop_ends_a_realtime_file_promptly(avi: Path) -> None:
    camera = CameraSource(str(avi), realtime=True).start()
    assert camera.take(timeout=2.0) is not None
    t = time.monotonic()
    camera.stop()
    assert time.monotonic() - t < 1.0
    assert camera._thread is not None and not camera._thread.is_alive()
    frames = camera.stats.frames
    time.sleep(0.3)
    assert camera.stats.frames == frames
    assert not camera.finished.is_set()  # stopped, not played to the end


def test_missing_file_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.avi"):
        CameraSource(str(tmp_path / "nope.avi"))


@pytest.mark.parametrize("source", [1.5, None, b"clip.avi", [0]])
def test_bad_source_type_raises_type_error(source: object) -> None:
    with pytest.raises(TypeError, match="camera source"):
        CameraSource(source)  # type: ignore[arg-type]


def test_digit_string_is_a_camera_index() -> None:
    camera = CameraSource("2")
    assert camera.source == 2
    assert not camera.is_file


def test_undecodable_file_does_not_retry_forever(tmp_path: Path) -> None:
    junk = tmp_path / "junk.avi"
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    camera = CameraSource(str(junk), backoff_s=(0.05, 0.1))
    try:
        camera.start()
    except (OSError, ValueError, RuntimeError):
        return  # refusing it up front is fine too
    try:
        assert camera.finished.wait(3.0), f"still retrying: {camera.stats}"
    finally:
        camera.stop()


# ---------------------------------------------------------------------- MJPEG over HTTP


def test_opencv_reads_the_mjpeg_stream(mjpeg_server: MjpegServer) -> None:
    """The premise of the HTTP tests: OpenCV's FFmpeg backend reads our server."""
    cap = cv2.VideoCapture(
        mjpeg_server.url,
        cv2.CAP_FFMPEG,
        [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, 3000, cv2.CAP_PROP_READ_TIMEOUT_MSEC, 3000],
    )
    try:
        assert cap.isOpened()
        numbers = []
        for _ in range(5):
            ok, image = cap.read()
            assert ok
            assert image.shape == (48, 64, 3)
            numbers.append(frame_number(image))
    finally:
        cap.release()
    assert all((b - a) % 28 == 1 for a, b in itertools.pairwise(numbers)), numbers


def age_s(camera: CameraSource) -> float:
    frame = camera.latest()
    return float("inf") if frame is None else (time.monotonic_ns() - frame.t_ns) / 1e9


def test_http_stream_delivers_frames(mjpeg_server: MjpegServer) -> None:
    with CameraSource(mjpeg_server.url) as camera:
        assert not camera.is_file
        assert wait_for(lambda: camera.stats.frames >= 15, 5.0), camera.stats
        assert age_s(camera) < 0.3
        frames = take_all(camera, 0.5)
    assert len(frames) >= 8  # ~30 fps
    numbers = [frame_number(f.image) for f in frames]
    assert len(set(numbers)) >= 8
    assert camera.stats.reopens == 0
    assert not camera.finished.is_set()


def test_http_stream_killed_goes_stale_then_reopens(mjpeg_server: MjpegServer) -> None:
    camera = CameraSource(mjpeg_server.url, timeout_ms=1000, backoff_s=(0.1, 0.5))
    with camera:
        assert wait_for(lambda: camera.stats.frames >= 10, 5.0), camera.stats
        mjpeg_server.kill()
        time.sleep(0.4)
        frames_after_kill = camera.stats.frames
        time.sleep(1.0)
        assert camera.stats.frames == frames_after_kill, "frames kept coming from a dead server"
        assert age_s(camera) > 1.0
        assert any("stopped delivering" in e for e in camera.stats.errors), camera.stats.errors
        assert camera.stats.reopens > 0  # failed attempts while the server is away

        mjpeg_server.start()  # same port
        assert wait_for(lambda: age_s(camera) < 0.3, 6.0), camera.stats
        assert wait_for(lambda: camera.stats.frames >= frames_after_kill + 10, 3.0)
    assert mjpeg_server.connections >= 2
    assert camera.stats.reopens > 0


class FailingCapture:
    """A real capture of the stream whose read() raises cv2.error after a few frames, as
    a driver or FFmpeg can: the failure cannot be provoked on demand from a real source."""

    def __init__(self, cap: cv2.VideoCapture, frames: int) -> None:
        self.cap, self.left = cap, frames

    def get(self, prop: int) -> float:
        return self.cap.get(prop)

    def read(self) -> tuple[bool, np.ndarray | None]:
        self.left -= 1
        if self.left < 0:
            raise cv2.error("backend failure injected by the test")
        return self.cap.read()

    def release(self) -> None:
        self.cap.release()


def test_a_capture_error_is_reported_and_the_stream_reopened(
    mjpeg_server: MjpegServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_open = CameraSource._open
    opened: list[object] = []

    def open_failing_first(self: CameraSource) -> object:
        cap = real_open(self)
        opened.append(cap)
        return FailingCapture(cap, frames=5) if len(opened) == 1 and cap is not None else cap

    monkeypatch.setattr(CameraSource, "_open", open_failing_first)
    camera = CameraSource(mjpeg_server.url, backoff_s=(0.1, 0.5))
    with camera:
        assert wait_for(lambda: camera.stats.frames >= 15, 8.0), camera.stats
        assert age_s(camera) < 0.3  # capture goes on after the error
    assert len(opened) >= 2
    assert camera.stats.reopens >= 1
    assert any("backend failure injected" in e for e in camera.stats.errors), camera.stats.errors
    assert camera.latest().index == camera.stats.frames - 1  # indices go on across reopens


def test_hung_http_stream_times_out_instead_of_blocking(mjpeg_server: MjpegServer) -> None:
    """A server that keeps the connection open but sends nothing: read() gives up after
    timeout_ms (FFmpeg's default would block ~30 s), and frames resume after it recovers."""
    camera = CameraSource(mjpeg_server.url, timeout_ms=800, backoff_s=(0.1, 0.5))
    with camera:
        assert wait_for(lambda: camera.stats.frames >= 10, 5.0), camera.stats
        mjpeg_server.frozen.set()
        t = time.monotonic()
        assert wait_for(lambda: bool(camera.stats.errors), 5.0, step=0.02), camera.stats
        noticed = time.monotonic() - t
        assert noticed < 0.8 + 1.5
        frames = camera.stats.frames
        time.sleep(0.5)
        assert camera.stats.frames == frames
        mjpeg_server.frozen.clear()
        assert wait_for(lambda: camera.stats.frames >= frames + 10, 8.0), camera.stats
        assert age_s(camera) < 0.3


def test_stream_that_resets_its_connection_keeps_delivering(mjpeg_server: MjpegServer) -> None:
    mjpeg_server.per_connection = 15  # each connection ends after 0.5 s
    with CameraSource(mjpeg_server.url, timeout_ms=1000, backoff_s=(0.1, 0.4)) as camera:
        assert wait_for(lambda: mjpeg_server.connections >= 3, 6.0), camera.stats
        assert wait_for(lambda: age_s(camera) < 0.3, 2.0)
    assert camera.stats.frames >= 30
    assert sum("stopped delivering" in e for e in camera.stats.errors) >= 2


def test_reconnects_are_counted_as_reopens(mjpeg_server: MjpegServer) -> None:
    mjpeg_server.per_connection = 15
    with CameraSource(mjpeg_server.url, timeout_ms=1000, backoff_s=(0.1, 0.4)) as camera:
        assert wait_for(lambda: mjpeg_server.connections >= 3, 6.0), camera.stats
    assert camera.stats.reopens >= 2, camera.stats


def test_frames_are_prepared_on_the_capture_thread(avi: Path) -> None:
    threads: list[threading.Thread] = []

    def halve(image: np.ndarray) -> np.ndarray:
        threads.append(threading.current_thread())
        return image[::2, ::2].copy()

    camera = CameraSource(str(avi), realtime=False)
    camera.prepare_frames(halve)  # before start: every frame is prepared
    with camera:
        frames = take_all(camera, 5.0)
    assert frames
    for frame in frames:
        assert frame.prepared_by is halve
        assert np.array_equal(frame.prepared, frame.image[::2, ::2])
    assert threads and threading.main_thread() not in threads


def test_a_frame_the_preparer_fails_on_is_published_unprepared(avi: Path) -> None:
    def fail(image: np.ndarray) -> np.ndarray:
        raise ValueError("not this one")

    camera = CameraSource(str(avi), realtime=False)
    camera.prepare_frames(fail)
    with camera:
        frames = take_all(camera, 5.0)
    # Every frame still arrives, unprepared: the consumer prepares it and meets the error.
    numbers = [frame_number(f.image) for f in frames]
    assert numbers == sorted(set(numbers))
    assert len(frames) + camera.stats.dropped == FRAMES
    assert all(f.prepared is None and f.prepared_by is None for f in frames)
    assert camera.stats.errors == []


# ---------------------------------------------------------------------- MJPEG, one JPEG at a time


def mjpeg_file(path: Path, frames: list[bytes]) -> Path:
    """A raw .mjpeg file: the JPEGs back to back, as an MJPEG camera sends them."""
    path.write_bytes(b"".join(frames))
    return path


def test_a_stream_that_changes_size_keeps_each_frames_size(tmp_path: Path) -> None:
    """FFmpeg's own decoding would scale the 1280x720 frames to the 640x480 of the open
    (checked below): decoded one JPEG at a time, each keeps its size."""
    small, large = textured_jpegs((640, 480), 3), textured_jpegs((1280, 720), 3, seed=1)
    path = mjpeg_file(tmp_path / "sizes.mjpeg", small + large + small)
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    assert {cap.read()[1].shape for _ in range(9)} == {(480, 640, 3)}  # what FFmpeg does
    cap.release()
    with CameraSource(str(path), realtime=False) as camera:
        frames = take_all(camera, 5.0)
    assert camera.stats.frames == 9 and camera.stats.corrupt == 0
    sizes = [f.image.shape[:2] for f in frames]
    assert (720, 1280) in sizes and sizes[0] == (480, 640) and sizes[-1] == (480, 640)
    expected = cv2.imdecode(np.frombuffer(large[0], np.uint8), cv2.IMREAD_COLOR)
    assert any(np.array_equal(f.image, expected) for f in frames)  # libjpeg's own pixels


def test_a_stream_whose_jpegs_never_decode_falls_back_to_ffmpeg(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Some cameras' JPEGs lack tables FFmpeg fills in; libjpeg alone is made to fail
    here, and after GIVE_UP_AFTER frames the camera reopens with FFmpeg decoding."""
    path = mjpeg_file(tmp_path / "plain.mjpeg", textured_jpegs((320, 240), 4) * 5)
    monkeypatch.setattr(mjpeg, "whole_jpeg", lambda data: False)
    with CameraSource(str(path), realtime=False) as camera:
        frames = take_all(camera, 5.0)
    limit = mjpeg.GIVE_UP_AFTER
    assert camera.stats.corrupt == limit and camera.stats.frames == 20, camera.stats
    assert len(frames) >= 1 and frames[-1].image.shape == (240, 320, 3)
    assert any("do not decode alone" in e for e in camera.stats.errors)


def test_http_stream_changes_size_and_corrupt_frames_are_skipped() -> None:
    """A network camera, where each frame is its own part of the HTTP response: sizes
    follow the camera, and truncated and garbage frames are counted and not published
    (a raw .mjpeg file cannot hold them apart: its parser splits at the JPEG markers)."""
    server = FaultyMjpegServer(fps=30.0, size=(320, 240), sizes=((640, 360),)).start()
    try:
        with CameraSource(server.url, timeout_ms=1000) as camera:
            assert wait_for(lambda: camera.stats.frames >= 5, 5.0), camera.stats
            server.size = (640, 360)
            assert wait_for(lambda: camera.latest().image.shape == (360, 640, 3), 3.0)
            server.corrupt = True
            assert wait_for(lambda: camera.stats.corrupt >= 4, 5.0), camera.stats
            server.corrupt = False
            frames = camera.stats.frames
            assert wait_for(lambda: camera.stats.frames >= frames + 5, 5.0), camera.stats
            assert camera.latest().image.shape == (360, 640, 3)
    finally:
        server.kill()
    # Truncated and garbage frames are caught; a bit-flipped one still decodes (no checksum).
    assert server.sent_by_kind.get("truncated", 0) + server.sent_by_kind.get("garbage", 0) >= 4


def test_memory_is_handed_back_once_large_frames_stop(monkeypatch: pytest.MonkeyPatch) -> None:
    assert mjpeg._malloc_trim() is not None  # glibc here: the real one is found
    trims: list[int] = []
    monkeypatch.setattr(mjpeg, "_malloc_trim", lambda: trims.append)
    memory = mjpeg.FrameMemory()
    small, large = 640 * 480 * 3, 3840 * 2160 * 3
    for nbytes in [small] * 100:  # never a large frame: nothing to hand back
        memory.saw(nbytes)
    assert trims == []
    for nbytes in [large] * 5 + [small] * (mjpeg.TRIM_AFTER_SMALL - 1):
        memory.saw(nbytes)
    assert trims == []  # the last large frames may still be held
    memory.saw(small)
    assert trims == [0]
    for nbytes in [small] * 100:  # once per burst, not once per frame
        memory.saw(nbytes)
    assert trims == [0]
