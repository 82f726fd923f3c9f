"""CameraSource: a camera index, a video file or an http/rtsp URL, read on its own thread.

The thread keeps only the newest frame, stamped with time.monotonic_ns() when OpenCV hands
it over: after transport and decoding, which for an MJPEG stream on this project's 2-core
machine came to 5.7 ms p50 and 15.7 ms p95 after the frame was made
(benchmarks/live_latency.py measures the true figure from stamps inside the frames).
The live loop takes whatever is newest and never queues. A stream that fails is
released and reopened with exponential backoff; a stream that keeps delivering the same
picture (some backends repeat the last frame after a USB unplug) stops being published,
so the loop sees the image go stale and marks it missing. cv2 is imported when the source
starts, not before.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Frame:
    """A captured picture: BGR uint8 [H, W, 3] as OpenCV delivers it."""

    image: np.ndarray
    t_ns: int
    index: int


@dataclass
class CameraStats:
    """Counters since start: frames captured, frames replaced before anyone took them,
    reopen attempts (after a failed open or a stream that stopped), and frames withheld as
    frozen (identical to the one before)."""

    frames: int = 0
    dropped: int = 0
    reopens: int = 0
    frozen: int = 0
    errors: list[str] = field(default_factory=list)


def _is_url(source: int | str) -> bool:
    return isinstance(source, str) and "://" in source


class CameraSource:
    """Newest-frame capture from cv2.VideoCapture on a background thread.

    Args:
        source: Camera index (int or a digit string), a video file path, or a URL.
        realtime: Play a video file at its own frame rate (as a camera would deliver it)
            rather than as fast as it decodes.
        loop: Start a video file again at its end.
        timeout_ms: FFmpeg open and read timeouts for files and URLs; without them a dead
            HTTP/RTSP stream blocks read() for about 30 s.
        frozen_after: Identical consecutive frames after which a camera device counts as
            frozen (0: never). Files and URLs are exempt: a still scene encoded to JPEG
            repeats exactly, and that is a picture, not a failure.
        backoff_s: First and longest wait between reopen attempts.
    """

    def __init__(
        self,
        source: int | str | Path,
        realtime: bool = True,
        loop: bool = False,
        timeout_ms: int = 2000,
        frozen_after: int = 15,
        backoff_s: tuple[float, float] = (0.25, 4.0),
    ) -> None:
        if isinstance(source, Path):
            source = str(source)
        if isinstance(source, str) and source.isdigit():
            source = int(source)
        if not isinstance(source, int | str):
            raise TypeError(
                f"camera source must be an index, a file path or a URL, got {type(source).__name__}"
            )
        self.source = source
        self.is_file = isinstance(source, str) and not _is_url(source)
        if self.is_file and not Path(source).is_file():
            raise FileNotFoundError(
                f"camera source {source!r} is neither a URL nor an existing video file"
            )
        self.realtime, self.loop = realtime, loop
        self.timeout_ms, self.frozen_after, self.backoff_s = timeout_ms, frozen_after, backoff_s
        self.stats = CameraStats()
        self.finished = threading.Event()  # a non-looping file reached its end
        self._frame: Frame | None = None
        self._taken = -1
        self._new = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._index = 0  # of the next frame, across reopens

    # ------------------------------------------------------------------ consumer side

    def latest(self) -> Frame | None:
        """The newest frame, or None before the first one."""
        with self._new:
            return self._frame

    def take(self, timeout: float) -> Frame | None:
        """Waits up to timeout seconds for a frame newer than the last one taken."""
        with self._new:
            self._new.wait_for(
                lambda: self._frame is not None and self._frame.index > self._taken, timeout
            )
            if self._frame is None or self._frame.index <= self._taken:
                return None
            self._taken = self._frame.index
            return self._frame

    # ------------------------------------------------------------------ lifetime

    def start(self) -> CameraSource:
        import cv2  # noqa: F401  (fail here, in the caller's thread, if OpenCV is missing)

        self._thread = threading.Thread(target=self._run, name=f"camera:{self.source}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> CameraSource:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ capture thread

    def _open(self):  # -> cv2.VideoCapture | None
        import cv2

        if isinstance(self.source, int):
            cap = cv2.VideoCapture(self.source)
        else:
            cap = cv2.VideoCapture(
                self.source,
                cv2.CAP_FFMPEG,
                [
                    cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
                    self.timeout_ms,
                    cv2.CAP_PROP_READ_TIMEOUT_MSEC,
                    self.timeout_ms,
                ],
            )
        if cap.isOpened():
            return cap
        cap.release()
        return None

    def _run(self) -> None:
        backoff = self.backoff_s[0]
        while not self._stop.is_set():
            try:
                self._capture()
                return
            except Exception as e:  # any error: see below
                # A backend (a driver, FFmpeg) can raise from open or read (cv2.error);
                # uncaught, it would end this thread silently and leave the last frame
                # ageing forever. Reported, and retried like a stream that stopped.
                if self.is_file:
                    self._note(f"capture of {self.source!r} failed: {e!r}; giving up")
                    self.finished.set()
                    return
                self._note(f"capture failed: {e!r}; reopening in {backoff:.2f} s")
                backoff = self._wait_to_reopen(backoff)

    def _capture(self) -> None:
        """Reads until stopped or a file ends; reopens a source that stops delivering."""
        cap, backoff, fps, started, shown = None, self.backoff_s[0], 0.0, 0.0, 0
        previous, repeats = None, 0
        try:
            while not self._stop.is_set():
                if cap is None:
                    cap = self._open()
                    if cap is None and self.is_file:
                        # A file that does not open will not open later: end, do not retry.
                        self._note(f"cannot decode video file {self.source!r}")
                        self.finished.set()
                        return
                    if cap is None:
                        self._note(f"cannot open {self.source!r}; retrying in {backoff:.2f} s")
                        backoff = self._wait_to_reopen(backoff)
                        continue
                    backoff = self.backoff_s[0]
                    fps = cap.get(5) or 0.0  # CAP_PROP_FPS; 0 when the backend does not know
                    started, shown = time.monotonic(), 0
                ok, image = cap.read()
                if not ok:
                    cap.release()
                    cap = None
                    if self.is_file and not self.loop:
                        self.finished.set()
                        return
                    if not self.is_file:
                        self._note(f"{self.source!r} stopped delivering; reopening")
                        self.stats.reopens += 1
                    continue
                t_ns = time.monotonic_ns()
                if self.is_file and self.realtime and fps > 0:
                    # A file plays at its own rate: wait for the moment this frame is due.
                    shown += 1
                    self._stop.wait(max(0.0, started + shown / fps - time.monotonic()))
                    t_ns = time.monotonic_ns()
                signature = image[::8, ::8].copy()
                if previous is not None and np.array_equal(signature, previous):
                    repeats += 1
                else:
                    repeats = 0
                previous = signature
                if (
                    isinstance(self.source, int)
                    and self.frozen_after
                    and repeats >= self.frozen_after
                ):
                    self.stats.frozen += 1
                    continue  # withheld: the loop sees the picture age and marks it missing
                self._publish(Frame(image, t_ns, self._index))
                self._index += 1
        finally:
            if cap is not None:
                cap.release()

    def _wait_to_reopen(self, backoff: float) -> float:
        """Counts a reopen, waits `backoff` (or until stopped); returns the next wait."""
        self.stats.reopens += 1
        self._stop.wait(backoff)
        return min(2 * backoff, self.backoff_s[1])

    def _publish(self, frame: Frame) -> None:
        with self._new:
            if self._frame is not None and self._frame.index > self._taken:
                self.stats.dropped += 1
            self._frame = frame
            self.stats.frames += 1
            self._new.notify_all()

    def _note(self, message: str) -> None:
        log.warning("camera: %s", message)
        self.stats.errors = [*self.stats.errors[-9:], message]
