"""CameraSource: a camera index, a video file or an http/rtsp URL, read on its own thread.

The thread keeps only the newest frame, stamped with time.monotonic_ns() when OpenCV hands
it over: after transport and decoding, which for an MJPEG stream on this project's 2-core
machine came to 5.7 ms p50 and 15.7 ms p95 after the frame was made
(benchmarks/live_latency.py measures the true figure from stamps inside the frames).
The live loop takes whatever is newest and never queues. A stream that fails is
released and reopened with exponential backoff; a stream that keeps delivering the same
picture (some backends repeat the last frame after a USB unplug) stops being published,
so the loop sees the image go stale and marks it missing. MJPEG from a URL or a file is
decoded one JPEG at a time with libjpeg, as the training images were (runtime/mjpeg.py):
each frame keeps its own size, and a frame that is not a whole JPEG is skipped. cv2 is
imported when the source starts, not before.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fusionedge.runtime.capture import CaptureSource, CaptureStats
from fusionedge.runtime.mjpeg import JpegFrames, hands_over_jpegs

if TYPE_CHECKING:
    import cv2

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Frame:
    """A captured picture: BGR uint8 [H, W, 3] as OpenCV delivers it.

    prepared: what the source's frame preparer (CameraSource.prepare_frames) made of the
    image on the capture thread, and prepared_by, that preparer; None without one.
    """

    image: np.ndarray
    t_ns: int
    index: int
    prepared: np.ndarray | None = field(default=None, repr=False, compare=False)
    prepared_by: Callable[[np.ndarray], np.ndarray] | None = field(
        default=None, repr=False, compare=False
    )


@dataclass
class CameraStats(CaptureStats):
    """Counters since start: frames captured, frames replaced before anyone took them,
    and frames withheld as frozen (identical to the one before) or corrupt (an MJPEG
    frame that is not a whole JPEG); besides opens, reopen attempts (after a failed open,
    a capture error or a stream that stopped) and errors."""

    frames: int = 0
    dropped: int = 0
    frozen: int = 0
    corrupt: int = 0


def _is_url(source: int | str) -> bool:
    return isinstance(source, str) and "://" in source


class _FilePace:
    """Holds a video file's frames back to its own frame rate, as a camera delivers them."""

    def __init__(self, fps: float) -> None:
        self.fps, self.started, self.shown = fps, time.monotonic(), 0

    def wait(self, stop: threading.Event) -> None:
        if self.fps > 0:
            self.shown += 1
            stop.wait(max(0.0, self.started + self.shown / self.fps - time.monotonic()))


class _Repeats:
    """How many frames in a row have looked the same as the one before."""

    def __init__(self) -> None:
        self.previous: np.ndarray | None = None
        self.count = 0

    def see(self, image: np.ndarray) -> int:
        signature = image[::8, ::8].copy()  # a coarse grid is enough to tell pictures apart
        same = self.previous is not None and np.array_equal(signature, self.previous)
        self.count = self.count + 1 if same else 0
        self.previous = signature
        return self.count


class CameraSource(CaptureSource):
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
        backoff_s: First and longest wait between reopen attempts. The longest is short
            because a camera is usually back within seconds (a network hiccup, a camera
            restarting) and every second it is not read is a second without pictures: with
            4 s, the soak's camera came back 2.7 s after its stream did. A failed attempt
            is cheap (a refused connection fails at once, an unreachable host takes
            timeout_ms), and repeated warnings are counted, not logged (capture._note).
    """

    kind = "camera"
    logger = log
    stats: CameraStats

    def __init__(
        self,
        source: int | str | Path,
        realtime: bool = True,
        loop: bool = False,
        timeout_ms: int = 2000,
        frozen_after: int = 15,
        backoff_s: tuple[float, float] = (0.25, 1.0),
    ) -> None:
        self.source = _parse_source(source)
        self.is_file = isinstance(self.source, str) and not _is_url(self.source)
        if self.is_file and not Path(self.source).is_file():
            raise FileNotFoundError(
                f"camera source {self.source!r} is neither a URL nor an existing video file"
            )
        super().__init__(CameraStats(), backoff_s, name=str(self.source))
        self.realtime, self.loop = realtime, loop
        self.timeout_ms, self.frozen_after = timeout_ms, frozen_after
        self._frame: Frame | None = None
        self._taken = -1
        self._new = threading.Condition()
        self._index = 0  # of the next frame, across reopens
        self._preparer: Callable[[np.ndarray], np.ndarray] | None = None
        # MJPEG through FFmpeg is read as JPEGs and decoded here (runtime/mjpeg.py), unless
        # a stream's JPEGs turned out not to decode alone.
        self._jpegs_wanted = not isinstance(self.source, int)
        self._jpegs = False

    @property
    def ends(self) -> bool:
        return self.is_file and not self.loop

    # ------------------------------------------------------------------ consumer side

    def prepare_frames(self, preparer: Callable[[np.ndarray], np.ndarray] | None) -> None:
        """Has the capture thread run preparer on each new frame (Frame.prepared).

        The live loop passes the model's image preparation here, so that resizing a
        camera frame (0.6 ms for 640x480 on this project's machine, more than the
        quickstart model's whole run) happens as the frame arrives, on the capture
        thread, instead of on the loop's turn. A frame the preparer fails on is published
        unprepared: the consumer prepares it again and meets the error there, in its own
        thread, where it is reported.
        """
        self._preparer = preparer

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

    # ------------------------------------------------------------------ capture thread

    def _prepare(self) -> None:
        import cv2  # noqa: F401  (fail here, in the caller's thread, if OpenCV is missing)

    def _gives_up(self, error: Exception) -> bool:
        # A file that fails to decode fails again from the start; a device or stream may
        # come back.
        if self.is_file:
            self.finished.set()
        return self.is_file

    def _open(self) -> cv2.VideoCapture | None:
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
            self._jpegs = self._jpegs_wanted and hands_over_jpegs(cap)
            return cap
        cap.release()
        return None

    def _capture(self) -> None:
        """Reads until stopped or a file ends; reopens a source that stops delivering."""
        while not self._stop.is_set() and not self.finished.is_set():
            cap = self._open_or_wait()
            if cap is None:
                continue
            try:
                self._read(cap)
            finally:
                cap.release()

    def _open_or_wait(self) -> cv2.VideoCapture | None:
        """An opened capture, or None after waiting to retry (or ending a file)."""
        cap = self._open()
        if cap is not None:
            self.stats.opens += 1
        elif self.is_file:
            # A file that does not open will not open later: end, do not retry.
            self._note(f"cannot decode video file {self.source!r}")
            self.finished.set()
        else:
            self._note(f"cannot open {self.source!r}; retrying in {self._backoff.next_s:.2f} s")
            self._wait_to_reopen()
        return cap

    def _read(self, cap: cv2.VideoCapture) -> None:
        """Publishes cap's frames until it stops delivering or capture is stopped."""
        pace = _FilePace(cap.get(5) if self.is_file and self.realtime else 0.0)  # CAP_PROP_FPS
        repeats = _Repeats()
        watch_freeze = isinstance(self.source, int) and self.frozen_after > 0
        jpegs = JpegFrames(self.source, self.stats, self._note) if self._jpegs else None
        while not self._stop.is_set():
            ok, image = cap.read()
            if not ok:
                self._ended()
                return
            if jpegs is not None:
                image = jpegs.decode(image)
                if image is None:
                    if jpegs.undecodable:  # no frame of this stream decodes alone
                        self._jpegs_wanted = False
                        return
                    continue
            pace.wait(self._stop)
            t_ns = time.monotonic_ns()
            if watch_freeze and repeats.see(image) >= self.frozen_after:
                self.stats.frozen += 1
                continue  # withheld: the loop sees the picture age and marks it missing
            self._publish(self._frame_of(image, t_ns))
            self._index += 1

    def _frame_of(self, image: np.ndarray, t_ns: int) -> Frame:
        preparer = self._preparer
        prepared = None
        if preparer is not None:
            try:
                prepared = preparer(image)
            except Exception:  # any: the consumer prepares again and gets the error
                preparer = None
        return Frame(image, t_ns, self._index, prepared, preparer)

    def _ended(self) -> None:
        """read() failed: the end of a file, or a device or stream that stopped."""
        if self.is_file:
            if not self.loop:
                self.finished.set()
            return
        # Reopened at once, without a wait: a stream that drops its connection now and
        # then is usually back on the first try.
        self._note(f"{self.source!r} stopped delivering; reopening")
        self.stats.reopens += 1

    def _publish(self, frame: Frame) -> None:
        self._backoff.reset()  # delivering again: the next failure waits the shortest time
        with self._new:
            if self._frame is not None and self._frame.index > self._taken:
                self.stats.dropped += 1
            self._frame = frame
            self.stats.frames += 1
            self._new.notify_all()


def _parse_source(source: int | str | Path) -> int | str:
    """A camera index as an int; a path or URL as a string."""
    if isinstance(source, Path):
        source = str(source)
    if isinstance(source, str) and source.isdigit():
        source = int(source)
    if not isinstance(source, int | str):
        raise TypeError(
            f"camera source must be an index, a file path or a URL, got {type(source).__name__}"
        )
    return source
