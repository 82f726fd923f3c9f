"""BatchWait: how long a batched model run waits for company, and for whom.

SharedModel (runtime/shared_model.py) asks it two things before a run starts: how many
calls to expect (the streams that call it, less those already in a run) and how long to
wait for them. Both come from what it has seen: which threads called recently, how long
the model's runs take and how busy it is. Waiting pays only when the model is the
bottleneck, so below half load it says 0, and a stream that stopped calling (its camera
gone, its file ended) stops being waited for after ACTIVE_S.
"""

from __future__ import annotations

import threading
import time

RUN_TIME_WEIGHT = 0.1  # of the newest run in the average: a few runs' worth of memory
LOAD_WINDOW_S = 0.5  # the model's load is measured over windows this long
BUSY_TO_WAIT = 0.5  # the automatic wait starts at this load (run time per second per slot)
# A thread that has not called for this long is no stream to wait for. Long against a
# camera's frame interval (33 ms at 30 fps; even a 2 fps stream stays counted), short
# against a camera outage or a stream that ended.
ACTIVE_S = 1.0


class BatchWait:
    """What the leader of the next run waits for. Not thread-safe: SharedModel calls it
    with its lock held.

    Args:
        slots: Model runs that may be in progress at once (SharedModel's max_runs).
        max_wait_ms: A fixed wait, at any load (0: never wait); None: automatic, half
            the model's recent run time while its load is at least BUSY_TO_WAIT.
    """

    def __init__(self, slots: int, max_wait_ms: float | None = None) -> None:
        if max_wait_ms is not None and not 0 <= max_wait_ms < float("inf"):
            raise ValueError(f"max_wait_ms must be 0 or more (or None: auto), got {max_wait_ms}")
        self.slots = slots
        self.max_wait_ms = max_wait_ms
        self.run_s: float | None = None  # recent run time, a moving average
        self._last_load = 0.0  # of the last full window
        self._window_start = time.monotonic()
        self._busy_s = 0.0
        self._callers: dict[int, float] = {}  # thread id -> time of its last call

    def called(self, now: float) -> None:
        """Notes a call from the current thread."""
        self._callers[threading.get_ident()] = now

    def streams(self, now: float) -> int:
        """Threads that called within ACTIVE_S (forgetting the others)."""
        gone = [t for t, seen in self._callers.items() if now - seen > ACTIVE_S]
        for thread in gone:
            del self._callers[thread]
        return len(self._callers)

    def ran(self, start: float, end: float) -> None:
        """Counts one model run, from start to end (time.monotonic())."""
        took = end - start
        previous = took if self.run_s is None else self.run_s  # the first run starts it
        self.run_s = previous + RUN_TIME_WEIGHT * (took - previous)
        self._busy_s += took
        span = end - self._window_start
        if span >= LOAD_WINDOW_S:
            self._last_load = self._busy_s / (span * self.slots)
            self._window_start, self._busy_s = end, 0.0

    def load(self, now: float) -> float:
        """Run time per second per slot: the last full window's, or once the current
        window has run its length without closing (no run ended), the current one's, so
        that an idle spell reads as idle."""
        span = now - self._window_start
        if span >= LOAD_WINDOW_S:
            return self._busy_s / (span * self.slots)
        return self._last_load

    def wait_s(self, now: float) -> float:
        """How long a queued call may now wait for company."""
        if self.max_wait_ms is not None:
            return self.max_wait_ms / 1000
        if self.run_s is None or self.load(now) < BUSY_TO_WAIT:
            return 0.0
        return self.run_s / 2
