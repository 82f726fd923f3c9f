"""Spoken digits for the demo data set: the bundled speech bank, augmentation, corruption.

The bank (``speech-bank/``, made by ``scripts/make_speech_bank.py`` with espeak-ng) holds short
clips of "zero".."nine" in several voices. `augment_speech` turns one clip into a realistic
microphone window; `corrupt_speech` turns a window into one whose digit cannot be heard,
the way a real microphone fails, so a model learns when not to trust its audio.
"""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

logger = logging.getLogger(__name__)

SPEECH_DIR: Path = Path(__file__).resolve().with_name("speech-bank")
_INDEX = "index.json"
_MAKE_SCRIPT = "scripts/make_speech_bank.py"

_SPEED_RANGE = (0.85, 1.15)
_GAIN_DB_RANGE = (-12.0, 3.0)
_SNR_DB_RANGE = (8.0, 30.0)
_DROWN_SNR_DB_RANGE = (-20.0, -12.0)


def load_speech_bank(sample_rate: int = 16000) -> dict[int, list[np.ndarray]]:
    """Loads the bundled spoken-digit clips.

    Args:
        sample_rate: Rate, in Hz, to return the clips at; they are resampled when the
            bank's own rate differs.

    Returns:
        Digit 0..9 -> float32 mono clips in [-1, 1]. The arrays are shared between calls
        and read-only; copy one before changing it.

    Raises:
        FileNotFoundError: The bank folder or its index is missing.
        TypeError: `sample_rate` is not an integer.
        ValueError: `sample_rate` is not positive.
    """
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)):
        raise TypeError(f"sample_rate must be an int, got {type(sample_rate).__name__}")
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    # Fresh dict and lists so a caller that edits them does not change the cached bank.
    return {d: list(clips) for d, clips in _load_bank(int(sample_rate)).items()}


@functools.lru_cache(maxsize=4)
def _load_bank(sample_rate: int) -> dict[int, tuple[np.ndarray, ...]]:
    index_path = SPEECH_DIR / _INDEX
    if not index_path.is_file():
        raise FileNotFoundError(
            f"speech bank not found: {index_path} is missing; "
            f"make it with `python {_MAKE_SCRIPT}` (needs espeak-ng)"
        )
    index = json.loads(index_path.read_text())
    bank: dict[int, list[np.ndarray]] = {d: [] for d in range(10)}
    for entry in index["clips"]:
        audio, rate = sf.read(SPEECH_DIR / entry["file"], dtype="float32", always_2d=True)
        audio = audio.mean(axis=1)
        if rate != sample_rate:
            audio = soxr.resample(audio, rate, sample_rate, quality="HQ")
        audio = np.clip(audio, -1.0, 1.0).astype(np.float32)
        audio.flags.writeable = False
        bank[int(entry["digit"])].append(audio)
    logger.debug("loaded %d speech clips at %d Hz", len(index["clips"]), sample_rate)
    return {d: tuple(clips) for d, clips in bank.items()}


def _check_1d(name: str, x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array, got shape {x.shape}")
    return x.astype(np.float32, copy=False)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)) + 1e-20))


def _speech_rms(x: np.ndarray, sample_rate: int) -> float:
    """RMS of the loudest quarter of 20 ms frames: the level of the speech itself, not
    diluted by the silence around it."""
    frame = max(int(0.02 * sample_rate), 1)
    n = len(x) // frame
    if n < 4:
        return _rms(x)
    power = np.mean(np.square(x[: n * frame].reshape(n, frame), dtype=np.float64), axis=1)
    return float(np.sqrt(np.mean(np.sort(power)[-(n // 4) :]) + 1e-20))


def _noise(kind: str, n: int, rng: np.random.Generator, sample_rate: int) -> np.ndarray:
    """Unit-RMS noise of one kind: "white", "pink" or "hum"."""
    if kind == "white":
        noise = rng.standard_normal(n)
    elif kind == "pink":
        # 1/f power: scale each rfft bin's amplitude by 1/sqrt(f); DC is left out.
        spectrum = np.fft.rfft(rng.standard_normal(n))
        f = np.arange(len(spectrum), dtype=np.float64)
        spectrum[1:] /= np.sqrt(f[1:])
        spectrum[0] = 0.0
        noise = np.fft.irfft(spectrum, n)
    elif kind == "hum":
        # Mains hum is never a pure sine: rectifiers and transformers add odd and even
        # harmonics, and a little hiss rides along.
        t = np.arange(n) / sample_rate
        f0 = rng.choice([50.0, 60.0]) * rng.uniform(0.995, 1.005)
        noise = 0.05 * rng.standard_normal(n)
        for k in range(1, 6):
            if k * f0 < sample_rate / 2:
                phase = rng.uniform(0, 2 * np.pi)
                noise += rng.uniform(0.3, 1.0) / k * np.sin(2 * np.pi * k * f0 * t + phase)
    else:
        raise ValueError(f"noise kind must be white, pink or hum, got {kind!r}")
    return noise / _rms(noise)


def augment_speech(
    clip: np.ndarray, rng: np.random.Generator, sample_rate: int, window_samples: int
) -> np.ndarray:
    """Makes one realistic microphone window from a clean clip.

    Speed perturbation (0.85-1.15, tempo and pitch together, like a tape), gain
    (-12..+3 dB), a random offset with the whole clip inside the window, and background
    noise (white, pink or mains hum) at 8-30 dB SNR; the result is clipped to [-1, 1].

    Args:
        clip: Mono speech in [-1, 1], shorter than the window.
        rng: Source of every random choice, so a seed gives the same window.
        sample_rate: Rate of `clip` and of the window, in Hz.
        window_samples: Length of the window returned.

    Returns:
        float32 array of exactly `window_samples` samples.

    Raises:
        ValueError: `clip` is not 1-D, or is too long to fit even at the fastest speed.
    """
    clip = _check_1d("clip", clip)
    if window_samples <= 0:
        raise ValueError(f"window_samples must be positive, got {window_samples}")
    lo, hi = _SPEED_RANGE
    # Slowing down lengthens the clip: raise the lower bound so it still fits.
    lo = max(lo, len(clip) / window_samples)
    if lo > hi:
        raise ValueError(
            f"clip of {len(clip)} samples does not fit a {window_samples}-sample window "
            f"even at speed {hi}"
        )
    speed = rng.uniform(lo, hi)
    # Resampling from rate*speed to rate and playing back at rate speeds it up by `speed`.
    voice = soxr.resample(clip, sample_rate * speed, sample_rate)[:window_samples]
    voice = voice * 10 ** (rng.uniform(*_GAIN_DB_RANGE) / 20)

    window = np.zeros(window_samples, dtype=np.float64)
    offset = int(rng.integers(0, window_samples - len(voice) + 1))
    window[offset : offset + len(voice)] = voice

    kind = str(rng.choice(["white", "pink", "hum"]))
    snr_db = rng.uniform(*_SNR_DB_RANGE)
    level = _speech_rms(voice, sample_rate) * 10 ** (-snr_db / 20)
    window += level * _noise(kind, window_samples, rng, sample_rate)
    return np.clip(window, -1.0, 1.0).astype(np.float32)


def corrupt_speech(window: np.ndarray, rng: np.random.Generator, sample_rate: int) -> np.ndarray:
    """Makes a window whose digit cannot be heard reliably, as a failing microphone would.

    One of: the mic is off (faint hiss only), the speech is drowned in loud noise
    (-20..-12 dB SNR), heavy clipping with long dropouts, or the wrong speech (2-3 random
    digits from the bank mixed in louder than the original).

    Args:
        window: Mono window in [-1, 1], usually from `augment_speech`.
        rng: Source of every random choice, so a seed gives the same result.
        sample_rate: Rate of `window`, in Hz.

    Returns:
        Array of the same length and dtype as `window`, in [-1, 1].

    Raises:
        ValueError: `window` is not a non-empty 1-D array.
        FileNotFoundError: The babble mode needs the speech bank, and it is missing.
    """
    dtype = np.asarray(window).dtype
    x = _check_1d("window", window).astype(np.float64)
    n = len(x)
    mode = int(rng.integers(4))
    if mode == 0:
        # Mic off or muted: only the preamp's hiss, tens of dB below speech.
        out = 10 ** (rng.uniform(-75, -55) / 20) * _noise("white", n, rng, sample_rate)
    elif mode == 1:
        # Pink noise masks speech better than white at the same SNR: its energy sits in
        # the low bands where the vowels are.
        noise_rms = 10 ** (rng.uniform(-20, -10) / 20)
        snr_db = rng.uniform(*_DROWN_SNR_DB_RANGE)
        speech_gain = noise_rms * 10 ** (snr_db / 20) / _speech_rms(x, sample_rate)
        kind = str(rng.choice(["white", "pink"], p=[0.3, 0.7]))
        out = speech_gain * x + noise_rms * _noise(kind, n, rng, sample_rate)
    elif mode == 2:
        out = _clip_and_drop(x, rng, sample_rate)
    else:
        out = _babble(x, rng, sample_rate)
    return np.clip(out, -1.0, 1.0).astype(dtype)


def _clip_and_drop(x: np.ndarray, rng: np.random.Generator, sample_rate: int) -> np.ndarray:
    """An overdriven input on a loose connection. Clipping alone leaves speech intelligible
    (even infinite clipping does), so long dropouts remove most of the window and only
    short bursts, too short to carry a whole word, survive."""
    out = np.clip(x * 10 ** (rng.uniform(25, 40) / 20), -1.0, 1.0)
    out *= rng.uniform(0.3, 0.9)
    keep = np.zeros(len(x), dtype=bool)
    burst_max = max(int(0.04 * sample_rate), 1)
    for _ in range(int(rng.integers(1, 4))):
        length = int(rng.integers(1, burst_max + 1))
        start = int(rng.integers(0, max(len(x) - length, 0) + 1))
        keep[start : start + length] = True
    out[~keep] = 0.0
    # The gaps are not digital silence: a dead line still crackles.
    crackle = rng.random(len(x)) < rng.uniform(1e-4, 1e-3)
    out[crackle] += rng.uniform(-0.5, 0.5, int(crackle.sum()))
    return out + 10 ** (rng.uniform(-70, -55) / 20) * _noise("white", len(x), rng, sample_rate)


def _babble(x: np.ndarray, rng: np.random.Generator, sample_rate: int) -> np.ndarray:
    """Other people's digits, louder than the original, so whatever is heard is likely the
    wrong one."""
    bank = _load_bank(int(sample_rate))
    n = len(x)
    # A floor, so babble over a near-silent window is still loud enough to be heard.
    ref = max(_speech_rms(x, sample_rate), 0.03)
    out = x * rng.uniform(0.1, 0.4)
    for _ in range(int(rng.integers(2, 4))):
        clips = bank[int(rng.integers(10))]
        clip = clips[int(rng.integers(len(clips)))]
        if len(clip) > n:
            start = int(rng.integers(0, len(clip) - n + 1))
            clip = clip[start : start + n]
        gain = ref * 10 ** (rng.uniform(0, 10) / 20) / _speech_rms(clip, sample_rate)
        offset = int(rng.integers(0, n - len(clip) + 1))
        out[offset : offset + len(clip)] += gain * clip
    peak = float(np.abs(out).max())
    # Loud voices overlapping can exceed full scale; a real mic's AGC would pull them back.
    return out / peak * 0.95 if peak > 0.95 else out
