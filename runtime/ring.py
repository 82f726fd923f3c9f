"""A timestamped ring buffer of mono audio, written by a capture callback, read by the loop.

The writer (a PortAudio callback, or a file player) must never wait: `write` copies the
block under a lock held for a memcpy and returns. The reader asks for the window that ends
at a moment (the capture time of a camera frame, say) and gets the samples plus the capture
time of the window's last sample, so the loop can report how old its audio is.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import numpy as np

# Samples, at the lower of the two rates, of context a ResampledRing resamples around the
# samples it hands on. soxr's HQ filter reaches about 106 (fusionedge.preprocess keeps
# 256 for files); with 128 the live ring equals whole-recording resampling within 2e-7
# from 8 to 48 kHz, as it does with 256, and runs half as far behind.
LIVE_MARGIN = 128


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
        (not yet written, or overwritten). Called with the lock held.

        Two slice copies, not an index array: a live turn reads a whole window, and
        gathering 16,000 samples through np.arange(...) % capacity cost about 10x more.
        """
        first = last - n
        out = np.zeros(n, dtype=np.float32)
        lo = max(first, self._written - self.capacity, 0)
        if lo < last:
            start, count = lo % self.capacity, last - lo
            head = min(count, self.capacity - start)
            out[lo - first : lo - first + head] = self._data[start : start + head]
            out[lo - first + head :] = self._data[: count - head]
        return out


class ResampledRing:
    """An AudioRing at another rate, fed block by block as the audio arrives.

    Each device block is resampled on entry, instead of a whole window on every turn of
    the live loop (0.12 ms a turn for 1 s of 48 kHz audio, against about 25 us a 20 ms
    block). A block cannot be resampled alone: the filter's output near a block's end
    depends on samples not captured yet. So each write resamples the unsettled samples
    with LIVE_MARGIN samples of context on both sides (aligned, as in
    fusionedge.preprocess, to instants where the two rates' samples coincide) and hands
    on only the samples that no later input can change. The ring therefore runs
    LIVE_MARGIN samples (at the lower rate) behind the device: 8 ms from 48 to 16 kHz,
    16 ms to 8 kHz, where soxr's own streaming mode held back 6-37 ms and 13-115 ms in
    bursts. Its samples equal those of resampling the whole recording at once within
    float rounding (2e-7, tested), and its stamps are the true capture times.
    """

    def __init__(self, device_rate: int, sample_rate: int, capacity_s: float) -> None:
        self.device_rate, self.sample_rate = device_rate, sample_rate
        self.ring = AudioRing(max(1, int(capacity_s * sample_rate)), sample_rate)
        # Device samples from one instant where both rates' samples coincide to the next.
        self._step = device_rate // math.gcd(device_rate, sample_rate)
        self._margin = -(-LIVE_MARGIN * device_rate // min(device_rate, sample_rate))
        self._pending = np.zeros(0, dtype=np.float32)  # device samples from _first on
        self._first = 0  # device index of _pending[0], a multiple of _step
        self._taken = 0  # device samples written
        self._given = 0  # samples handed on at sample_rate

    def write(self, block: np.ndarray, end_ns: int) -> None:
        """Takes a mono float32 block whose last sample was captured at end_ns.

        Called by one writer thread only (the PortAudio callback, a file player).
        """
        from fusionedge.preprocess import resample  # the same filter as for files

        block = np.asarray(block, dtype=np.float32).reshape(-1)
        self._pending = np.concatenate([self._pending, block])
        self._taken += len(block)
        settled = max(0, (self._taken - self._margin) * self.sample_rate // self.device_rate)
        if settled <= self._given:
            return
        rate_in, rate_out = self.device_rate, self.sample_rate
        out = resample(self._pending, rate_in, rate_out)
        offset = self._first * rate_out // rate_in
        # The last sample handed on lies this far before the newest device sample.
        behind_ns = round((self._taken / rate_in - settled / rate_out) * 1e9)
        self.ring.write(out[self._given - offset : settled - offset], end_ns - behind_ns)
        self._given = settled
        # Keep the context the next write needs: the margin before the first unsettled
        # sample, from an instant where the rates coincide.
        keep = (settled * rate_in // rate_out - self._margin) // self._step
        first = max(0, keep * self._step)
        self._pending = self._pending[first - self._first :]
        self._first = first
