"""CaptureSource: what the camera and the audio sources share.

A source runs a capture loop on its own thread between start() and stop() (or a `with`
block). A failure in that loop is never silent: it is recorded in stats.errors, logged at
WARNING with its traceback, and the source reopened after a wait that doubles with each
failure (Backoff) and starts over once the source delivers again. No capture library is
imported here; subclasses import cv2 or sounddevice when they start.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import ClassVar, TypeVar

log = logging.getLogger(__name__)

MAX_ERRORS = 10  # messages kept in CaptureStats.errors, newest last
# The same message again within this long is counted, not logged: a camera that stays
# away is retried every second, and a warning a second would bury everything else.
REPEAT_NOTE_S = 30.0

S = TypeVar("S", bound="CaptureSource")


@dataclass
class CaptureStats:
    """Counters since start: successful opens, reopen attempts (counted when made, after
    the backoff wait, whether or not they succeed), and the last MAX_ERRORS problems."""

    opens: int = 0
    reopens: int = 0
    errors: list[str] = field(default_factory=list)

    def add_error(self, message: str) -> None:
        # A new list rather than append: readers on other threads see the old list or the
        # new one, never one being trimmed.
        self.errors = [*self.errors[-(MAX_ERRORS - 1) :], message]


class Backoff:
    """Waits between reopen attempts: `first`, doubled after each wait, at most `longest`."""

    def __init__(self, first: float, longest: float) -> None:
        if not 0 < first <= longest:
            raise ValueError(f"backoff needs 0 < first <= longest, got ({first}, {longest})")
        self.first, self.longest = first, longest
        self.next_s = first

    def advance(self) -> float:
        """The wait to use now; the one after it is twice as long (up to `longest`)."""
        wait, self.next_s = self.next_s, min(2 * self.next_s, self.longest)
        return wait

    def reset(self) -> None:
        self.next_s = self.first


class CaptureSource:
    """A capture loop on a background thread, reopened with backoff when it fails.

    Subclasses implement _capture(), the loop itself: it returns when the source has
    ended or stop() was called (check `stopping`), and raises on a failure. They may also
    override _prepare() (runs in the caller's thread in start(), so a missing library or
    device fails there), _release() (after the thread has ended) and _gives_up(error).

    Args:
        stats: The subclass's stats, a CaptureStats with its own counters added.
        backoff_s: First and longest wait between reopen attempts.
        name: Names the thread ("<kind>:<name>").
    """

    kind: ClassVar[str] = "capture"  # prefix of log messages
    logger: ClassVar[logging.Logger] = log  # subclasses log under their own module's name

    def __init__(
        self, stats: CaptureStats, backoff_s: tuple[float, float] = (0.25, 4.0), name: str = ""
    ) -> None:
        self.stats = stats
        self.backoff_s = backoff_s
        self.name = name
        self._backoff = Backoff(*backoff_s)
        # Set when a source that ends by itself (see `ends`) has ended.
        self.finished = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_note, self._last_note_at, self._repeats = "", 0.0, 0  # see _note

    # ------------------------------------------------------------------ lifetime

    def start(self: S) -> S:
        """Starts capturing on a daemon thread; returns self."""
        self._prepare()
        self._thread = threading.Thread(
            target=self._run, name=f"{self.kind}:{self.name}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Ends capture: waits up to 5 s for the thread, then releases the device."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._release()

    def __enter__(self: S) -> S:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def ends(self) -> bool:
        """Whether the source ends by itself (a file that does not loop), setting
        `finished`; a device or stream delivers until stop()."""
        return False

    @property
    def stopping(self) -> bool:
        """stop() has been called."""
        return self._stop.is_set()

    # ------------------------------------------------------------------ for subclasses

    def _prepare(self) -> None:
        """Runs in start(), before the thread."""

    def _capture(self) -> None:
        raise NotImplementedError(f"{type(self).__name__} does not define _capture()")

    def _release(self) -> None:
        """Runs in stop(), after the thread has ended."""

    def _gives_up(self, error: Exception) -> bool:
        """Whether `error` ends capture for good rather than being retried."""
        return False

    def _wait_to_reopen(self) -> bool:
        """Waits the next backoff, then counts the reopen about to be tried; False (and
        nothing counted) if stopped meanwhile."""
        if self._stop.wait(self._backoff.advance()):
            return False
        self.stats.reopens += 1
        return True

    def _note(self, message: str, error: BaseException | None = None) -> None:
        """Records a problem in stats.errors and logs it at WARNING, with the traceback
        of `error` when there is one; the same message as the last one, within
        REPEAT_NOTE_S of its logging, is logged at DEBUG and counted, and the count is
        logged before the next warning."""
        self.stats.add_error(message)  # every time: the list keeps only the newest
        now = time.monotonic()
        if message == self._last_note and now - self._last_note_at < REPEAT_NOTE_S:
            self._repeats += 1
            self.logger.debug("%s: %s", self.kind, message, exc_info=error)
            return
        if self._repeats:
            self.logger.warning(
                "%s: the warning before came %d times more", self.kind, self._repeats
            )
        self.logger.warning("%s: %s", self.kind, message, exc_info=error)
        self._last_note, self._last_note_at, self._repeats = message, now, 0

    # ------------------------------------------------------------------ the thread

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._capture()
                return
            except Exception as error:  # any: uncaught, it would end the thread silently
                if self._gives_up(error):
                    self._note(f"capture failed: {error!r}; giving up", error)
                    return
                wait = self._backoff.next_s
                self._note(f"capture failed: {error!r}; reopening in {wait:.2f} s", error)
                self._wait_to_reopen()
