"""Audio from users' files and arrays -> the model's float32 mono window (numpy + soundfile + soxr).

Any channel count, dtype (float in [-1, 1], int16/int32 PCM) and sample rate becomes
float32 mono at the spec's rate, centre-cropped or zero-padded to num_samples; the graph
computes the log-mel. Float audio outside [-1, 1] is refused: int16 values passed as
float would play as a deafening square wave.

Decoding is bounded, because manifests and `--audio` paths come from users: only regular
files are opened (fusionedge.media_files); a file is read only around the window the
model takes, and an array is cropped at its own rate before it is resampled; sample
rates outside MIN_SAMPLE_RATE..MAX_SAMPLE_RATE are refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fusionedge.errors import MediaError
from fusionedge.media_files import regular_file_size, sound_errors
from fusionedge.spec import AudioSpec

if TYPE_CHECKING:
    from soundfile import SoundFile

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".aiff", ".aif")
# More channels than this means the caller almost surely passed [channels, samples].
MAX_CHANNELS = 64
# Sample rates accepted for files and arrays, in Hz: from telephone-band recordings to
# the fastest studio converters. A wrong rate (1 Hz for a 16 kHz array) would otherwise
# make the resampler ask for gigabytes.
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 1_000, 768_000
# Samples, at the lower of the two rates, read beyond the window on each side before
# resampling: soxr's HQ filter reaches about 106 of them (measured from 1 kHz to
# 768 kHz), so what lies farther out cannot change the window.
RESAMPLE_MARGIN = 256
# libsndfile reports this many frames when a file does not say its length (a FLAC
# written to a pipe): the centre of such a file cannot be found without decoding it all.
_UNKNOWN_FRAMES = 2**63 - 1


def _frame_count(sound: SoundFile, path: Path) -> int:
    """The file's frame count from its header; a file without one is refused."""
    frames = int(sound.frames)
    if frames == 0:
        raise MediaError(f"{path}: audio file has no samples")
    if frames >= _UNKNOWN_FRAMES:
        raise MediaError(
            f"{path}: the audio file does not say how long it is (written to a pipe?); "
            "re-encode it to a file, e.g. ffmpeg -i in.flac out.flac"
        )
    return frames


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """Decodes a whole audio file to float32 [samples, channels] in [-1, 1] and its rate.

    Raises:
        MediaError: the file is missing, not a regular file, not audio libsndfile can
            decode, or has a sample rate outside MIN_SAMPLE_RATE..MAX_SAMPLE_RATE.
    """
    import soundfile

    path = Path(path)
    regular_file_size(path, "audio")
    with sound_errors(path), soundfile.SoundFile(str(path)) as sound:
        rate = _checked_rate(sound.samplerate, str(path))
        frames = _frame_count(sound, path)
        data = sound.read(frames, dtype="float32", always_2d=True)
    return data, rate


def _checked_rate(sample_rate: int, name: str) -> int:
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int | np.integer):
        raise TypeError(f"{name}: sample_rate must be an int (Hz), got {sample_rate!r}")
    if not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
        raise MediaError(
            f"{name}: sample rate {sample_rate} Hz is not accepted; accepted: "
            f"{MIN_SAMPLE_RATE:,} to {MAX_SAMPLE_RATE:,} Hz"
        )
    return int(sample_rate)


def _check_audio(audio: np.ndarray, name: str) -> None:
    """Checks type, shape, dtype and (for float) the value range, allocating nothing."""
    if not isinstance(audio, np.ndarray):
        raise TypeError(f"{name}: expected a numpy array, got {type(audio).__name__}")
    if audio.ndim not in (1, 2) or (audio.ndim == 2 and audio.shape[1] == 0) or not len(audio):
        raise MediaError(
            f"{name}: shape {audio.shape} is not audio; accepted: [samples] or [samples, channels]"
        )
    if audio.ndim == 2 and audio.shape[1] > MAX_CHANNELS:
        raise MediaError(
            f"{name}: shape {audio.shape} has {audio.shape[1]} channels; "
            "accepted: [samples, channels] (transpose a [channels, samples] array)"
        )
    if audio.dtype in (np.int16, np.int32):
        return
    if audio.dtype not in (np.float32, np.float64, np.float16):
        raise MediaError(
            f"{name}: dtype {audio.dtype} is not supported; accepted: float "
            "in [-1, 1], int16 or int32 PCM"
        )
    low, high = float(audio.min()), float(audio.max())  # NaN propagates through both
    if not (math.isfinite(low) and math.isfinite(high)):
        raise MediaError(f"{name}: audio contains NaN or infinity")
    if low < -1.0 or high > 1.0:
        # Float audio in int16 units would pass as a deafening square wave.
        raise MediaError(
            f"{name}: float audio must lie in [-1, 1], got {low:g} to {high:g}; divide "
            "int16 values by 32768 (int32 by 2147483648), or pass the integer array as is"
        )


def to_mono_float32(audio: np.ndarray, name: str = "audio") -> np.ndarray:
    """[S] or [S, C] of float in [-1, 1] or int16/int32 PCM -> float32 [S] (channel mean)."""
    _check_audio(audio, name)
    # Scale integer PCM before mixing down: the mean of int16 columns is float64 in
    # integer units, which would slip past the scaling.
    if audio.dtype == np.int16:
        audio = audio.astype(np.float32) / 32768.0
    elif audio.dtype == np.int32:
        audio = (audio.astype(np.float64) / 2147483648.0).astype(np.float32)
    if audio.ndim == 2:
        audio = audio.mean(axis=1) if audio.shape[1] > 1 else audio[:, 0]
    return audio.astype(np.float32, copy=False)


def resample(audio: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Band-limited resampling of float32 mono audio (soxr, high quality)."""
    if rate_in == rate_out:
        return audio
    if rate_in <= 0:
        raise MediaError(f"sample rate must be positive, got {rate_in}")
    import soxr

    return soxr.resample(audio, rate_in, rate_out, quality="HQ").astype(np.float32, copy=False)


def resampled_length(frames: int, rate_in: int, rate_out: int) -> int:
    """The number of samples `resample` returns for `frames` input samples.

    soxr gives frames * rate_out / rate_in rounded half up (checked against soxr in
    tests/reliability/test_hostile_media.py).
    """
    if rate_in == rate_out:
        return frames
    return (frames * rate_out + rate_in // 2) // rate_in


def fit_window(audio: np.ndarray, num_samples: int) -> np.ndarray:
    """Centre-crops or symmetrically zero-pads mono audio to exactly num_samples.

    Centring keeps an utterance that was recorded with some lead-in and tail inside the
    window, which is what users' short clips look like.
    """
    n = audio.shape[0]
    if n == num_samples:
        return audio
    if n > num_samples:
        start = (n - num_samples) // 2
        return audio[start : start + num_samples]
    out = np.zeros(num_samples, dtype=np.float32)
    start = (num_samples - n) // 2
    out[start : start + n] = audio
    return out


@dataclass(frozen=True)
class _Span:
    """The input frames [start, stop) that decide the model's window.

    skip: resampled samples before the window; None when the whole input is read and
    fit_window pads it (it is no longer than the window).
    """

    start: int
    stop: int
    skip: int | None


def _window_span(frames: int, rate_in: int, spec: AudioSpec) -> _Span:
    """Where fit_window(resample(all frames)) takes its window from, in input frames.

    The start is moved back to a multiple of rate_in / gcd(rate_in, rate_out) input
    frames, where input and output samples fall at the same instant, so the part's
    resampled samples lie on the whole input's output grid.
    """
    rate_out, n = spec.sample_rate, spec.num_samples
    total = resampled_length(frames, rate_in, rate_out)
    if total <= n:
        return _Span(0, frames, None)
    first = (total - n) // 2  # fit_window's centre crop, in output samples
    if rate_in == rate_out:
        return _Span(first, first + n, 0)
    step = rate_in // math.gcd(rate_in, rate_out)
    margin = -(-RESAMPLE_MARGIN * rate_in // min(rate_in, rate_out))
    start = max(0, (first * rate_in // rate_out - margin) // step * step)
    stop = min(frames, -(-(first + n) * rate_in // rate_out) + margin)
    return _Span(start, stop, first - start * rate_out // rate_in)


def _window(mono: np.ndarray, rate_in: int, spec: AudioSpec, span: _Span) -> np.ndarray:
    """The model's window from the mono frames of span, resampled to the spec's rate."""
    out = resample(mono, rate_in, spec.sample_rate)
    if span.skip is None:
        return fit_window(out, spec.num_samples)
    return out[span.skip : span.skip + spec.num_samples]


def prepare_audio(
    audio: np.ndarray, sample_rate: int, spec: AudioSpec, name: str = "audio"
) -> np.ndarray:
    """Any audio array at any rate -> the model's float32 [num_samples] at spec.sample_rate.

    The window is cut at the input rate (with the resampler's margin) before anything is
    converted or resampled, so a long array costs no more than a window's worth.
    """
    rate = _checked_rate(sample_rate, name)
    _check_audio(audio, name)
    span = _window_span(len(audio), rate, spec)
    return _window(to_mono_float32(audio[span.start : span.stop], name), rate, spec, span)


def load_audio(path: str | Path, spec: AudioSpec) -> np.ndarray:
    """Audio file -> the model's float32 [num_samples]: prepare_audio of read_audio.

    Only the frames that decide the window are decoded: the header gives the length and
    rate, libsndfile seeks to the window, so a 10-hour file costs what a clip does.
    """
    import soundfile

    path = Path(path)
    regular_file_size(path, "audio")
    with sound_errors(path), soundfile.SoundFile(str(path)) as sound:
        rate = _checked_rate(sound.samplerate, str(path))
        frames = _frame_count(sound, path)
        span = _window_span(frames, rate, spec)
        if span.start:
            sound.seek(span.start)
        data = sound.read(span.stop - span.start, dtype="float32", always_2d=True)
    if len(data) != span.stop - span.start:
        # A window taken from where the header says the file is would not be its centre.
        raise MediaError(
            f"{path}: the audio file ends early: {span.start + len(data)} frames where its "
            f"header says {frames}"
        )
    return _window(to_mono_float32(data, str(path)), rate, spec, span)
