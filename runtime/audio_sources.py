"""Audio sources for the live loop: a microphone (sounddevice) and a WAV file in real time.

Both fill an AudioRing at their own sample rate from another thread and hand out the
model's window (its sample rate, its length) ending at a given moment. A consumer that
takes windows at another rate asks for a ring at that rate (ring_at), which is then fed
through a streaming resampler as the audio arrives. sounddevice (and
with it PortAudio) is imported when a MicrophoneSource is made, never before.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np

from fusionedge.runtime.capture import CaptureSource, CaptureStats
from fusionedge.runtime.ring import AudioRing, AudioWindow, ResampledRing

log = logging.getLogger(__name__)


def import_sounddevice() -> ModuleType:
    """sounddevice, or an error that says which system package provides PortAudio."""
    try:
        import sounddevice
    except OSError as e:  # the module imports, but libportaudio is not on the system
        raise ImportError(
            "sounddevice cannot find the PortAudio library; install it (Debian/Ubuntu: "
            "apt-get install libportaudio2; macOS: brew install portaudio)"
        ) from e
    return sounddevice


@dataclass
class AudioStats(CaptureStats):
    """Counters since start: blocks received and input overflows and underflows (from
    PortAudio's status flags); besides opens, reopen attempts and errors."""

    blocks: int = 0
    overflows: int = 0
    underflows: int = 0

    @property
    def restarts(self) -> int:
        """Stream restarts: the audio name for reopens."""
        return self.reopens


class AudioSource(CaptureSource):
    """What the live loop needs from any audio input: the model's window ending at a time.

    A subclass writes mono float32 blocks into `ring` from its capture loop or callback.
    """

    kind = "audio"
    logger = log
    stats: AudioStats

    def __init__(
        self,
        device_rate: int,
        capacity_s: float,
        backoff_s: tuple[float, float] = (0.25, 4.0),
        name: str = "",
    ) -> None:
        super().__init__(AudioStats(), backoff_s, name)
        self.device_rate = device_rate
        self.capacity_s = capacity_s
        self.ring = AudioRing(int(capacity_s * device_rate), device_rate)
        self._resampled: ResampledRing | None = None
        self._writing = threading.Lock()

    def ring_at(self, sample_rate: int) -> AudioRing:
        """The ring holding this source's audio at sample_rate.

        At another rate than the device's, a second ring is fed through a ResampledRing as
        blocks arrive, starting with what the device's ring holds already. One other rate
        per source.
        """
        if sample_rate == self.device_rate:
            return self.ring
        with self._writing:
            if self._resampled is None:
                resampled = ResampledRing(self.device_rate, sample_rate, self.capacity_s)
                held = self.ring.window(min(self.ring.written, self.ring.capacity))
                if held is not None:
                    resampled.write(held.samples, held.end_ns)
                self._resampled = resampled
        if self._resampled.ring.sample_rate != sample_rate:
            raise ValueError(
                f"this source already feeds a ring at {self._resampled.ring.sample_rate} Hz; "
                f"one other rate than the device's {self.device_rate} Hz is supported"
            )
        return self._resampled.ring

    def write(self, block: np.ndarray, end_ns: int) -> None:
        """Stores a mono float32 block whose last sample was captured at end_ns.

        Subclasses call it from their capture thread or callback; an application with its
        own capture can feed a source through it too. The lock is contended only while
        ring_at starts a resampled ring (about 1 ms for 5 s of audio).
        """
        with self._writing:
            self.ring.write(block, end_ns)
            if self._resampled is not None:
                self._resampled.write(block, end_ns)

    def window(
        self, num_samples: int, sample_rate: int, end_ns: int | None = None
    ) -> AudioWindow | None:
        """num_samples at sample_rate ending at end_ns (newest when None), mono float32.

        From a ring at that rate when there is one (the device's, or ring_at's); else the
        device's samples are resampled now, for this window.
        """
        if sample_rate == self.device_rate:
            return self.ring.window(num_samples, end_ns)
        resampled = self._resampled
        if resampled is not None and resampled.ring.sample_rate == sample_rate:
            return resampled.ring.window(num_samples, end_ns)
        import soxr

        # Read a little more than the window so the resampler's start-up edge falls
        # outside what the model sees (the end edge cannot: there is no later audio yet).
        pad = 64
        n_device = int(np.ceil(num_samples * self.device_rate / sample_rate)) + pad
        raw = self.ring.window(n_device, end_ns)
        if raw is None:
            return None
        resampled = soxr.resample(raw.samples, self.device_rate, sample_rate, quality="HQ")
        body = resampled[-num_samples:]
        out = np.zeros(num_samples, dtype=np.float32)
        out[num_samples - len(body) :] = body
        return AudioWindow(out, raw.end_ns, sample_rate)


def capture_stamp(
    now_ns: int, current_s: float, adc_s: float, block_s: float, newest_ns: int | None
) -> int:
    """When a block's last sample was captured, in time.monotonic_ns().

    Blocks held back by a stall (this process, or the sound server) arrive late, several
    at once; stamped on arrival, audio seconds old would read as fresh for stale_ms after
    it lands. PortAudio says how old each block is on its own clock: currentTime is now,
    inputBufferAdcTime when the block's first sample was captured (0 where the host API
    does not say). The age is capped at 10 s against a host that reports nonsense, and
    stamps never go backwards, which the ring's per-sample times rely on.
    """
    stamp = now_ns
    if adc_s > 0:
        age_s = current_s - adc_s - block_s
        stamp -= int(min(max(age_s, 0.0), 10.0) * 1e9)
    return stamp if newest_ns is None else max(stamp, newest_ns)


class WavFileSource(AudioSource):
    """Plays an audio file into the ring in real time, block by block, as a mic would."""

    def __init__(
        self, path: str | Path, block_ms: float = 20.0, loop: bool = False, capacity_s: float = 10.0
    ) -> None:
        from fusionedge.preprocess import read_audio, to_mono_float32

        data, rate = read_audio(path)
        self.path = Path(path)
        super().__init__(rate, capacity_s, name=self.path.name)
        self.samples = to_mono_float32(data, str(path))
        self.block = max(1, int(rate * block_ms / 1000))
        self.loop = loop

    @property
    def ends(self) -> bool:
        return not self.loop

    def _gives_up(self, error: Exception) -> bool:
        # Playing a file again from the start would replay audio the loop already heard.
        self.finished.set()
        return True

    def _capture(self) -> None:
        start, position = time.monotonic(), 0
        while not self._stop.is_set():
            if position >= len(self.samples):
                if not self.loop:
                    self.finished.set()
                    return
                position = 0
            block = self.samples[position : position + self.block]
            played = (self.stats.blocks * self.block + len(block)) / self.device_rate
            self._stop.wait(max(0.0, start + played - time.monotonic()))
            self.write(block, time.monotonic_ns())
            self.stats.blocks += 1
            position += len(block)


class MicrophoneSource(AudioSource):
    """A sounddevice InputStream feeding the ring, restarted when it stops delivering.

    Args:
        device: A device name (substring, as sounddevice matches it), an index, or
            None / "default" for the system default input.
        sample_rate: The rate to ask for (the model's). A device that refuses it is
            opened at its own default rate and windows are resampled on the way out.
        block_ms: Callback block length.
        capacity_s: Seconds of audio the ring keeps.
        stale_after_s: No callback for this long counts as a stalled device: the stream
            is closed and reopened, with backoff.
        backoff_s: First and longest wait between reopen attempts.
    """

    def __init__(
        self,
        device: int | str | None,
        sample_rate: int,
        block_ms: float = 20.0,
        capacity_s: float = 5.0,
        stale_after_s: float = 1.0,
        backoff_s: tuple[float, float] = (0.25, 4.0),
    ) -> None:
        self.device = None if device in (None, "default") else device
        if isinstance(self.device, str) and self.device.isdigit():
            self.device = int(self.device)
        self.requested_rate = sample_rate
        self.block_ms, self.stale_after_s = block_ms, stale_after_s
        self._sd = import_sounddevice()
        name = "default" if self.device is None else str(self.device)
        super().__init__(self._choose_rate(), capacity_s, backoff_s, name)
        self._stream = None  # a sounddevice.InputStream while open
        self._opened_ns = 0

    def _choose_rate(self) -> int:
        """The requested rate if the device takes it, else the device's default rate."""
        try:
            self._sd.check_input_settings(
                device=self.device, samplerate=self.requested_rate, channels=1, dtype="float32"
            )
            return self.requested_rate
        except (self._sd.PortAudioError, ValueError) as e:
            # How sounddevice refuses settings (PortAudio's error, or ValueError from its
            # own checks). A device that does not exist is refused too, and query_devices
            # then raises its own error for it. Anything else is a bug: it propagates.
            info = self._sd.query_devices(self.device, "input")
            rate = int(info["default_samplerate"])
            log.info(
                "audio: %s refuses %d Hz (%s); capturing at %d Hz and resampling",
                info["name"],
                self.requested_rate,
                e,
                rate,
            )
            return rate

    def _callback(self, indata: np.ndarray, frames: int, time_info, status) -> None:
        # Runs on PortAudio's thread: copy and return, never block.
        t_ns = capture_stamp(
            time.monotonic_ns(),
            time_info.currentTime,
            time_info.inputBufferAdcTime,
            frames / self.device_rate,
            self.ring.end_ns,
        )
        if status.input_overflow:
            self.stats.overflows += 1
        if status.input_underflow:
            self.stats.underflows += 1
        self.write(indata.mean(axis=1) if indata.shape[1] > 1 else indata[:, 0], t_ns)
        self.stats.blocks += 1

    def _open(self) -> None:
        self._stream = self._sd.InputStream(
            device=self.device,
            samplerate=self.device_rate,
            channels=1,
            dtype="float32",
            blocksize=int(self.device_rate * self.block_ms / 1000),
            callback=self._callback,
        )
        self._stream.start()
        self._opened_ns = time.monotonic_ns()
        self.stats.opens += 1

    def _close(self) -> None:
        if self._stream is not None:
            try:
                self._stream.close(ignore_errors=True)
            finally:
                self._stream = None

    def _prepare(self) -> None:
        # Opened in start(), in the caller's thread, so that a missing device fails there;
        # the capture thread only watches the stream and reopens it.
        self._open()

    def _release(self) -> None:
        self._close()

    def _capture(self) -> None:
        """Watches the stream; one that stops delivering is closed and opened again."""
        while not self._stop.wait(self.stale_after_s / 4):
            if self._delivering():
                self._backoff.reset()
                continue
            self._note(f"no audio for {self.stale_after_s:.1f} s; reopening the stream")
            self._close()
            if self._wait_to_reopen():
                self._reopen()

    def _reopen(self) -> None:
        try:
            self._open()
        except Exception as error:  # any: reported, and retried on the next check
            # The device may be gone for a while (unplugged, its server restarting); the
            # stream stays closed, so the next check finds no audio and backs off again.
            self._note(f"reopen failed: {error!r}", error)

    def _delivering(self) -> bool:
        # Audio counts as fresh from the moment the stream (re)opened, so a stream gets
        # stale_after_s to deliver its first block.
        last = max(self.ring.end_ns or 0, self._opened_ns)
        fresh = time.monotonic_ns() - last < self.stale_after_s * 1e9
        return fresh and self._stream is not None and self._stream.active
