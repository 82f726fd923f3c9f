"""Audio sources: a WAV file played in real time, and a real microphone stack
(sounddevice -> PortAudio -> ALSA "pulse" -> a PulseAudio pipe source fed by the test)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from live_helpers import FifoTone, VirtualMic, dominant_hz, tone, wait_for

from fusionedge.runtime.audio_sources import MicrophoneSource, WavFileSource

RATE = 16000


def write_wav(path: Path, pcm: np.ndarray, rate: int = RATE) -> Path:
    sf.write(str(path), pcm, rate, subtype="PCM_16")
    return path


def onset(samples: np.ndarray, threshold: float = 0.1) -> int:
    """Index of the first sample louder than threshold."""
    loud = np.flatnonzero(np.abs(samples) > threshold)
    assert len(loud), "no sound in the window"
    return int(loud[0])


@pytest.fixture(scope="module")
def tone_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1.5 s of 440 Hz at 16 kHz."""
    return write_wav(tmp_path_factory.mktemp("audio") / "tone.wav", tone(440.0, 1.5, RATE))


@pytest.fixture(scope="module")
def late_tone_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1.0 s of silence, then 0.5 s of 440 Hz, at 16 kHz."""
    pcm = np.concatenate([np.zeros(RATE, np.float32), tone(440.0, 0.5, RATE)])
    return write_wav(tmp_path_factory.mktemp("audio") / "late.wav", pcm)


# ---------------------------------------------------------------------- WavFileSource


def test_wav_file_plays_in_real_time_and_finishes(tone_wav: Path) -> None:
    source = WavFileSource(tone_wav)
    assert source.device_rate == RATE
    assert source.window(100, RATE) is None  # nothing played yet
    t0 = time.monotonic()
    with source:
        time.sleep(0.5)
        played = source.ring.written / RATE
        wall = time.monotonic() - t0
        assert wall - 0.1 <= played <= wall + 0.03, (played, wall)
        assert not source.finished.is_set()
        assert source.finished.wait(3.0)
        elapsed = time.monotonic() - t0
    assert 1.45 <= elapsed < 2.2
    assert source.ring.written == round(1.5 * RATE)
    assert source.stats.blocks == int(np.ceil(1.5 * RATE / 320))  # 20 ms blocks
    # The ring's newest stamp is when the last block was written.
    assert 0 <= time.monotonic_ns() - source.ring.end_ns < 1.0e9


def test_wav_window_native_rate_and_resampled_keeps_the_pitch(tone_wav: Path) -> None:
    with WavFileSource(tone_wav) as source:
        assert source.finished.wait(3.0)
    native = source.window(8000, RATE)
    assert native.sample_rate == RATE and len(native.samples) == 8000
    assert dominant_hz(native.samples, RATE) == pytest.approx(440, abs=3)
    for rate, n in ((8000, 4000), (22050, 11025), (48000, 24000)):
        w = source.window(n, rate)
        assert w.sample_rate == rate
        assert w.samples.dtype == np.float32 and w.samples.shape == (n,)
        assert dominant_hz(w.samples, rate) == pytest.approx(440, abs=3), rate
        # same loudness as the file (0.5 amplitude -> RMS 0.354), edges included
        assert np.sqrt(np.mean(w.samples**2)) == pytest.approx(0.354, abs=0.02), rate
        assert w.end_ns == native.end_ns


def test_wav_window_ending_in_the_past_lines_up_when_resampled(late_tone_wav: Path) -> None:
    """The tone starts 0.5 s before the end of the file: a 1 s window ending at the end
    has its onset half-way, and one ending 0.25 s earlier has it at three quarters."""
    with WavFileSource(late_tone_wav) as source:
        assert source.finished.wait(3.0)
    end = source.ring.end_ns
    earlier = end - 250_000_000
    assert onset(source.window(RATE, RATE).samples) == pytest.approx(RATE // 2, abs=2)
    w = source.window(RATE, RATE, end_ns=earlier)
    assert w.end_ns == earlier
    assert onset(w.samples) == pytest.approx(3 * RATE // 4, abs=2)
    w8 = source.window(8000, 8000)
    assert onset(w8.samples) == pytest.approx(4000, abs=8)
    w8 = source.window(8000, 8000, end_ns=earlier)
    assert w8.end_ns == earlier
    assert onset(w8.samples) == pytest.approx(6000, abs=8)


def test_wav_file_loops_and_stops(tmp_path: Path) -> None:
    wav = write_wav(tmp_path / "short.wav", tone(1000.0, 0.3, RATE))
    source = WavFileSource(wav, loop=True)
    with source:
        time.sleep(0.9)
        assert not source.finished.is_set()
        assert source.ring.written >= 0.75 * RATE  # played past the end of the 0.3 s file
    written = source.ring.written
    time.sleep(0.1)
    assert source.ring.written == written  # stop() stopped it
    assert not source.finished.is_set()


def test_wav_stop_ends_playback_early(tone_wav: Path) -> None:
    source = WavFileSource(tone_wav).start()
    time.sleep(0.2)
    t = time.monotonic()
    source.stop()
    assert time.monotonic() - t < 0.5
    assert not source.finished.is_set()
    assert source.ring.written < RATE


# ---------------------------------------------------------------------- MicrophoneSource


def newest_age_s(source: MicrophoneSource) -> float:
    end = source.ring.end_ns
    return float("inf") if end is None else (time.monotonic_ns() - end) / 1e9


def test_microphone_hears_the_virtual_mic(virtual_mic: VirtualMic) -> None:
    writer = virtual_mic.tone(440.0)
    try:
        mic = MicrophoneSource("pulse", RATE, stale_after_s=1.0)
        assert mic.device_rate == RATE  # the pulse device takes 16 kHz as asked
        with mic:
            assert wait_for(lambda: mic.ring.written >= RATE, 6.0), (mic.stats, writer.errors)
            time.sleep(0.1)
            w = mic.window(8000, RATE)
            assert w is not None
            assert dominant_hz(w.samples, RATE) == pytest.approx(440, abs=3)
            assert np.sqrt(np.mean(w.samples**2)) > 0.2  # ~0.354: the tone, not silence
            w8 = mic.window(4000, 8000)
            assert dominant_hz(w8.samples, 8000) == pytest.approx(440, abs=3)
            assert newest_age_s(mic) < 0.3
            assert mic.stats.blocks > 10
            assert isinstance(mic.stats.overflows, int) and mic.stats.overflows >= 0
            assert isinstance(mic.stats.underflows, int)
            assert mic.stats.restarts == 0, mic.stats.errors
    finally:
        writer.close()
    assert not writer.errors


def test_stalled_microphone_is_restarted_and_recovers(virtual_mic: VirtualMic) -> None:
    writer = virtual_mic.tone(440.0)
    try:
        mic = MicrophoneSource("pulse", RATE, stale_after_s=0.5, backoff_s=(0.1, 0.4))
        with mic:
            assert wait_for(lambda: mic.ring.written >= RATE // 2, 6.0), mic.stats
            writer.pause()  # the device stops delivering
            assert wait_for(lambda: mic.stats.restarts > 0, 5.0), mic.stats
            assert any("no audio" in e for e in mic.stats.errors), mic.stats.errors
            assert newest_age_s(mic) > 0.5
            written = mic.ring.written
            writer.resume(1000.0)  # and comes back, with another sound
            assert wait_for(lambda: mic.ring.written >= written + RATE // 2, 8.0), mic.stats
            assert newest_age_s(mic) < 0.3
            w = mic.window(RATE // 4, RATE)
            assert dominant_hz(w.samples, RATE) == pytest.approx(1000, abs=8)
            restarts = mic.stats.restarts
            time.sleep(1.0)  # a healthy stream is left alone
            assert mic.stats.restarts == restarts
    finally:
        writer.close()


def test_microphone_survives_its_source_disappearing(virtual_mic: VirtualMic) -> None:
    """The pipe source is unloaded (a USB microphone pulled out) and loaded again: the
    watchdog keeps reopening with backoff and audio flows again once it is back."""
    writer: FifoTone | None = virtual_mic.tone(440.0)
    mic = MicrophoneSource("pulse", RATE, stale_after_s=0.5, backoff_s=(0.1, 0.4))
    try:
        with mic:
            assert wait_for(lambda: mic.ring.written >= RATE // 2, 6.0), mic.stats
            writer.close()
            writer = None
            unloaded = virtual_mic.pactl("unload-module", "module-pipe-source")
            assert unloaded.returncode == 0, unloaded.stderr
            assert wait_for(lambda: mic.stats.restarts >= 2, 6.0), mic.stats
            assert newest_age_s(mic) > 0.5
            loaded = virtual_mic.pactl(
                "load-module",
                "module-pipe-source",
                "source_name=virtmic",
                f"file={virtual_mic.fifo}",
                "format=s16le",
                f"rate={virtual_mic.rate}",
                "channels=1",
            )
            assert loaded.returncode == 0, loaded.stderr
            assert virtual_mic.pactl("set-default-source", "virtmic").returncode == 0
            writer = virtual_mic.tone(1000.0)
            written = mic.ring.written
            assert wait_for(lambda: mic.ring.written >= written + RATE // 2, 10.0), mic.stats
            assert newest_age_s(mic) < 0.3
            w = mic.window(RATE // 4, RATE)
            assert dominant_hz(w.samples, RATE) == pytest.approx(1000, abs=8)
    finally:
        if writer is not None:
            writer.close()
        sources = virtual_mic.pactl("list", "short", "sources").stdout
        if "virtmic" not in sources:  # leave the session's microphone as it was
            virtual_mic.pactl(
                "load-module",
                "module-pipe-source",
                "source_name=virtmic",
                f"file={virtual_mic.fifo}",
                "format=s16le",
                f"rate={virtual_mic.rate}",
                "channels=1",
            )
            virtual_mic.pactl("set-default-source", "virtmic")


def test_audio_device_list_shows_the_virtual_mic_and_the_rates_it_takes(
    virtual_mic: VirtualMic,
) -> None:
    """`fusionedge devices`: PortAudio's inputs, each probed at the common rates (a refused
    rate is left out, not an error)."""
    from fusionedge.runtime.devices import COMMON_RATES, list_audio_inputs

    inputs = list_audio_inputs()
    pulse = [d for d in inputs if d["name"] == "pulse"]
    assert pulse, [d["name"] for d in inputs]
    assert virtual_mic.rate in pulse[0]["rates"]
    assert set(pulse[0]["rates"]) <= set(COMMON_RATES)
    assert sum(d["default"] for d in inputs) <= 1


def test_a_held_back_block_is_stamped_with_its_capture_time() -> None:
    from fusionedge.runtime.audio_sources import capture_stamp

    now = 50_000_000_000
    # On time: PortAudio says the 20 ms block began 25 ms ago: it ended 5 ms ago.
    assert capture_stamp(now, 100.0, 99.975, 0.020, None) == now - 5_000_000
    # Held back 0.6 s by a stall: stamped 0.6 s old, so the loop sees stale audio as stale.
    assert capture_stamp(now, 100.0, 99.38, 0.020, None) == now - 600_000_000
    # No time from the host API (0): the arrival time.
    assert capture_stamp(now, 100.0, 0.0, 0.020, None) == now
    # Never before the block stamped already, never more than 10 s back.
    assert capture_stamp(now, 100.0, 99.38, 0.020, now - 100_000_000) == now - 100_000_000
    assert capture_stamp(now, 1000.0, 1.0, 0.020, None) == now - 10_000_000_000
