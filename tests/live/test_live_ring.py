"""AudioRing: the timestamped ring buffer between a capture callback and the live loop."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from fusionedge.runtime.ring import AudioRing, AudioWindow

RATE = 1000  # 1 sample per ms keeps the timestamp arithmetic readable
MS = 1_000_000


def ramp(start: int, n: int) -> np.ndarray:
    return np.arange(start, start + n, dtype=np.float32)


def test_window_is_none_before_any_write() -> None:
    ring = AudioRing(16, RATE)
    assert ring.window(4) is None
    assert ring.window(4, end_ns=123) is None
    assert ring.end_ns is None
    assert ring.written == 0


def test_empty_block_is_not_a_write() -> None:
    ring = AudioRing(16, RATE)
    ring.write(np.zeros(0, dtype=np.float32), 5 * MS)
    assert ring.window(4) is None


@pytest.mark.parametrize(("capacity", "sample_rate"), [(0, 16000), (-1, 16000), (8, 0)])
def test_bad_sizes_raise(capacity: int, sample_rate: int) -> None:
    with pytest.raises(ValueError, match="positive"):
        AudioRing(capacity, sample_rate)


def test_newest_window_across_the_wrap_around() -> None:
    ring = AudioRing(10, RATE)
    t = 0
    for start in range(0, 37, 3):  # blocks of 3 samples: 0..38, wrapping several times
        t += 3 * MS
        ring.write(ramp(start, 3), t)
    assert ring.written == 39
    w = ring.window(10)
    assert isinstance(w, AudioWindow)
    np.testing.assert_array_equal(w.samples, ramp(29, 10))
    assert w.end_ns == t
    assert w.sample_rate == RATE
    np.testing.assert_array_equal(ring.window(4).samples, ramp(35, 4))


def test_block_longer_than_capacity_keeps_its_tail() -> None:
    ring = AudioRing(8, RATE)
    ring.write(ramp(0, 5), 5 * MS)
    ring.write(ramp(5, 20), 25 * MS)
    np.testing.assert_array_equal(ring.window(8).samples, ramp(17, 8))


def test_window_ending_in_the_past_skips_samples_and_stamps_its_end() -> None:
    ring = AudioRing(100, RATE)
    ring.write(ramp(0, 60), 1000 * MS)  # sample k was captured at (1000 - 59 + k) ms
    w = ring.window(10, end_ns=990 * MS)  # 10 ms before the newest: skip 10 samples
    np.testing.assert_array_equal(w.samples, ramp(40, 10))
    assert w.end_ns == 990 * MS
    # A moment between two samples ends at the later one (floor of the skip).
    w = ring.window(5, end_ns=990 * MS - MS // 2)
    np.testing.assert_array_equal(w.samples, ramp(45, 5))
    assert w.end_ns == 990 * MS
    # The stamp is the newest stamp minus the skipped samples' duration.
    for end in (1000, 999, 975, 942):
        w = ring.window(3, end_ns=end * MS)
        assert w.end_ns == end * MS
        assert w.samples[-1] == 59 - (1000 - end)


def test_window_ending_in_the_future_ends_at_the_newest_sample() -> None:
    ring = AudioRing(100, RATE)
    ring.write(ramp(0, 30), 500 * MS)
    w = ring.window(4, end_ns=900 * MS)
    np.testing.assert_array_equal(w.samples, ramp(26, 4))
    assert w.end_ns == 500 * MS


def test_window_across_the_wrap_ending_in_the_past() -> None:
    ring = AudioRing(16, RATE)
    t = 0
    for start in range(0, 50, 5):  # 0..49, the buffer wrapped 3 times
        t += 5 * MS
        ring.write(ramp(start, 5), t)
    w = ring.window(8, end_ns=t - 3 * MS)  # ends at sample 46
    np.testing.assert_array_equal(w.samples, ramp(39, 8))
    assert w.end_ns == t - 3 * MS


def test_longer_than_written_is_zero_padded_at_the_front() -> None:
    ring = AudioRing(100, RATE)
    ring.write(ramp(1, 6), 50 * MS)
    w = ring.window(10)
    np.testing.assert_array_equal(w.samples, [0, 0, 0, 0, 1, 2, 3, 4, 5, 6])
    assert w.samples.dtype == np.float32
    # Past the start of the recording: fewer real samples, more padding.
    w = ring.window(10, end_ns=48 * MS)
    np.testing.assert_array_equal(w.samples, [0, 0, 0, 0, 0, 0, 1, 2, 3, 4])


def test_longer_than_capacity_is_zero_padded_at_the_front() -> None:
    ring = AudioRing(8, RATE)
    ring.write(ramp(100, 30), 30 * MS)  # only the last 8 are kept
    w = ring.window(12)
    np.testing.assert_array_equal(w.samples[:4], np.zeros(4))
    np.testing.assert_array_equal(w.samples[4:], ramp(122, 8))
    # Ending further back than the buffer reaches: all zeros, but still a window.
    w = ring.window(4, end_ns=10 * MS)
    np.testing.assert_array_equal(w.samples, np.zeros(4))


def test_window_is_a_copy() -> None:
    ring = AudioRing(8, RATE)
    ring.write(ramp(0, 8), 8 * MS)
    w = ring.window(8)
    ring.write(ramp(100, 8), 16 * MS)
    np.testing.assert_array_equal(w.samples, ramp(0, 8))


def test_concurrent_writer_and_reader_never_see_torn_blocks() -> None:
    """A writer appends a continuous ramp in blocks of odd sizes while a reader takes
    windows: every window is a contiguous piece of the ramp (after any zero padding),
    and its stamp matches its last sample."""
    rate, capacity = 1_000_000, 4096  # one sample per microsecond of the fake clock
    ring = AudioRing(capacity, rate)
    stop = threading.Event()
    written = [0]

    def writer() -> None:
        n, sizes = 0, [1, 7, 64, 255, 1000, 3]
        k = 0
        while not stop.is_set() and n < 5_000_000:
            size = sizes[k % len(sizes)]
            # Ramp values stay exact in float32 below 2**24: wrap them there.
            block = (np.arange(n, n + size) % (1 << 24)).astype(np.float32)
            ring.write(block, (n + size) * 1000)  # sample k stamped k+1 microseconds
            n += size
            k += 1
            written[0] = n
        stop.set()

    problems: list[str] = []
    reads = [0]

    def reader() -> None:
        rng = np.random.default_rng(0)
        while not stop.is_set():
            newest = ring.end_ns
            if newest is None:
                continue
            n = int(rng.integers(1, capacity))
            back = int(rng.integers(0, 200)) * 1000
            w = ring.window(n, end_ns=newest - back if rng.random() < 0.5 else None)
            reads[0] += 1
            s = w.samples
            real = s[np.argmax(s != 0) :] if s.any() else s[:0]
            if len(real) > 1:
                steps = np.diff(real.astype(np.int64)) % (1 << 24)
                if not np.all(steps == 1):
                    problems.append(f"torn window: {real[:8]}...")
            if len(real):
                # the last sample's value k was stamped (k + 1) microseconds
                expected = (int(w.end_ns) // 1000 - 1) % (1 << 24)
                if int(real[-1]) != expected:
                    problems.append(f"stamp {w.end_ns} does not match sample {real[-1]}")
            if len(problems) > 5:
                stop.set()

    threads = [threading.Thread(target=writer), threading.Thread(target=reader)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 3.0
    while not stop.is_set() and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    for t in threads:
        t.join(timeout=5)
    assert not problems, problems[:5]
    assert written[0] > 10 * capacity  # wrapped many times
    assert reads[0] > 100


def test_window_at_cuts_by_absolute_sample_index() -> None:
    ring = AudioRing(capacity=1000, sample_rate=1000)
    assert ring.window_at(10, 0) is None  # nothing written yet
    samples = np.arange(1500, dtype=np.float32)
    for start in range(0, 1500, 100):  # 15 blocks of 100 ms; the ring keeps the last 1000
        ring.write(samples[start : start + 100], end_ns=(start + 100) * 1_000_000)
    w = ring.window_at(200, 1300)
    assert np.array_equal(w.samples, samples[1100:1300])
    # Its last sample, 1299, is 200 samples (200 ms) before the newest, stamped 1.5 s.
    assert w.end_ns == 1_300_000_000
    assert ring.window_at(10, 1501) is None  # past the newest sample
    older = ring.window_at(300, 700)  # reaches back before what the ring still holds
    assert np.array_equal(older.samples[100:], samples[500:700])
    assert not older.samples[:100].any()


def test_the_ring_wraps_with_two_slices_and_keeps_order() -> None:
    ring = AudioRing(capacity=7, sample_rate=RATE)
    ring.write(ramp(0, 5), 5 * MS)
    ring.write(ramp(5, 5), 10 * MS)  # wraps: the ring holds samples 3..9
    assert np.array_equal(ring.window(7).samples, ramp(3, 7))
    assert np.array_equal(ring.window(4, end_ns=8 * MS).samples, ramp(4, 4))


@pytest.mark.parametrize(
    ("rate_in", "rate_out", "block"),
    [(48000, 16000, 960), (44100, 16000, 441), (16000, 8000, 317), (8000, 16000, 160)],
)
def test_resampled_ring_equals_resampling_the_whole_recording(
    rate_in: int, rate_out: int, block: int
) -> None:
    import soxr

    from fusionedge.runtime.ring import LIVE_MARGIN, ResampledRing

    rng = np.random.default_rng(rate_in + block)
    pcm = (0.3 * rng.standard_normal(2 * rate_in)).astype(np.float32)
    resampled = ResampledRing(rate_in, rate_out, capacity_s=3.0)
    for start in range(0, len(pcm), block):  # odd block sizes: not aligned to the rates
        piece = pcm[start : start + block]
        resampled.write(piece, (start + len(piece)) * 10**9 // rate_in)
    whole = soxr.resample(pcm, rate_in, rate_out, quality="HQ")
    ring = resampled.ring
    n = ring.written
    np.testing.assert_allclose(ring.window(n).samples, whole[:n], atol=1e-6)
    # It runs LIVE_MARGIN samples at the lower rate behind, and says so in its stamps:
    # the newest sample out is stamped with its own capture time, not the block's.
    behind_s = LIVE_MARGIN / min(rate_in, rate_out)
    assert len(pcm) / rate_in - n / rate_out == pytest.approx(behind_s, abs=1.5 / rate_out)
    assert ring.end_ns == pytest.approx(n / rate_out * 1e9, abs=1e3)


def test_a_source_asked_for_another_rate_late_starts_from_what_it_holds() -> None:
    from fusionedge.runtime.audio_sources import AudioSource

    source = AudioSource(48000, capacity_s=2.0)
    tone = np.sin(2 * np.pi * 440 * np.arange(48000) / 48000).astype(np.float32)
    source.write(tone[:24000], 500 * MS)
    ring = source.ring_at(16000)
    assert ring.written > 7000  # the half second already held, less the margin
    source.write(tone[24000:], 1000 * MS)
    assert source.ring_at(16000) is ring
    window = source.window(16000, 16000)
    assert window is not None and window.sample_rate == 16000
    spectrum = np.abs(np.fft.rfft(window.samples[-8000:]))
    assert np.fft.rfftfreq(8000, 1 / 16000)[np.argmax(spectrum)] == pytest.approx(440, abs=2)
    with pytest.raises(ValueError, match="already feeds a ring at 16000 Hz"):
        source.ring_at(8000)
