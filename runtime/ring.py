"""A timestamped ring buffer of mono audio, written by a capture callback, read by the loop.

The writer (a PortAudio callback, or a file player) must never wait: `write` copies the
block under a lock held for a memcpy and returns. The reader asks for the window that ends
at a moment (the capture time of a camera frame, say) and gets the samples plus the capture
time of the window's last sample, so the loop can report how old its audio is.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class AudioWindow:
    """Samples [n] float32 and the time.monotonic_ns() at which the last one was captured."""

    samples: np.ndarray
    end_ns: int
    sample_rate: int


class AudioRing:
    """Holds the most recent `capacity` samples with the capture time of the newest one.

    Timestamps are kept per write (block), not per sample: the time of any sample is the
    time of its block's end minus its distance to that end, at the nominal sample rate.
    """

    def __init__(self, capacity: int, sample_rate: int) -> None:
        if capacity < 1 or sample_rate < 1:
            raise ValueError(
                f"capacity and sample_rate must be positive, got {capacity}, {sample_rate}"
            )
        self.capacity = capacity
        self.sample_rate = sample_rate
        self._data = np.zeros(capacity, dtype=np.float32)
        self._written = 0  # samples ever written; the newest sits at (_written - 1) % capacity
        self._end_ns: int | None = None
        self._lock = threading.Lock()

    @property
    def written(self) -> int:
        return self._written

    @property
    def end_ns(self) -> int | None:
        """Capture time of the newest sample, None before the first write."""
        return self._end_ns

    def write(self, block: np.ndarray, end_ns: int) -> None:
        """Appends mono float32 samples whose last one was captured at end_ns."""
        block = np.asarray(block, dtype=np.float32).reshape(-1)
        skipped = max(0, len(block) - self.capacity)  # older than the ring can hold
        block = block[skipped:]
        n = len(block)
        if n == 0:
            return
        with self._lock:
            self._written += skipped
            start = self._written % self.capacity
            first = min(n, self.capacity - start)
            self._data[start : start + first] = block[:first]
            self._data[: n - first] = block[first:]
            self._written += n
            self._end_ns = end_ns

    def window_at(self, n: int, end_index: int) -> AudioWindow | None:
        """The n samples ending just before absolute sample index end_index (the count of
        samples written when the last one arrived), zero-padded where the buffer does not
        reach back that far; None before anything was written or past the newest sample.

        Windows cut by index, unlike by time, are whole samples apart, which is what lets
        a streaming front end reuse the frames it computed for the previous window.
        """
        with self._lock:
            if self._end_ns is None or end_index > self._written:
                return None
            written, newest = self._written, self._end_ns
            out = self._copy(n, end_index)
        stamp = newest - (written - end_index) * 1_000_000_000 // self.sample_rate
        return AudioWindow(out, stamp, self.sample_rate)

    def window(self, n: int, end_ns: int | None = None) -> AudioWindow | None:
        """The n samples ending at end_ns (or at the newest sample), zero-padded where the
        buffer does not reach back that far; None before anything was written.

        A window asked to end after the newest sample ends at the newest sample: audio
        from the future does not exist yet, and waiting would stall the loop.
        """
        with self._lock:
            if self._end_ns is None:
                return None
            newest, written, stamp = self._end_ns, self._written, self._end_ns
            skip = 0
            if end_ns is not None and end_ns < newest:
                skip = int((newest - end_ns) * self.sample_rate // 1_000_000_000)
                stamp = newest - skip * 1_000_000_000 // self.sample_rate
            out = self._copy(n, written - skip)
        return AudioWindow(out, stamp, self.sample_rate)

    def _copy(self, n: int, last: int) -> np.ndarray:
        """The n samples before absolute index `last`, zeros where the ring holds none
        (not yet written, or overwritten). Called with the lock held."""
        first = last - n
        out = np.zeros(n, dtype=np.float32)
        lo = max(first, self._written - self.capacity, 0)
        if lo < last:
            idx = np.arange(lo, last) % self.capacity
            out[lo - first :] = self._data[idx]
        return out
