"""The in-graph log-mel front end against an independent float64 numpy reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fusionedge.spec import AudioSpec
from fusionedge.training.frontend import LogMel, mel_filterbank

SPECS = {
    "tiny": AudioSpec(sample_rate=8000, num_samples=4000, n_fft=256, hop_length=128, n_mels=16),
    "default": AudioSpec(),
    "band": AudioSpec(
        sample_rate=16000,
        num_samples=8000,
        n_fft=512,
        hop_length=256,
        n_mels=24,
        f_min=100.0,
        f_max=6000.0,
        log_floor=1e-4,
    ),
}


def hz_to_mel(f):
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def mel_to_hz(m):
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


def band_edges(spec: AudioSpec) -> np.ndarray:
    """n_mels + 2 HTK-mel band edges in Hz, float64."""
    top = spec.f_max if spec.f_max is not None else spec.sample_rate / 2
    return mel_to_hz(np.linspace(hz_to_mel(spec.f_min), hz_to_mel(top), spec.n_mels + 2))


def reference_filterbank(spec: AudioSpec) -> np.ndarray:
    """Triangles written out per filter and per bin (float64 [bins, n_mels])."""
    edges = band_edges(spec)
    freqs = np.arange(spec.n_fft // 2 + 1) * spec.sample_rate / spec.n_fft
    out = np.zeros((freqs.size, spec.n_mels))
    for i in range(spec.n_mels):
        lo, mid, hi = edges[i], edges[i + 1], edges[i + 2]
        for b, f in enumerate(freqs):
            if lo < f <= mid:
                out[b, i] = (f - lo) / (mid - lo)
            elif mid < f < hi:
                out[b, i] = (hi - f) / (hi - mid)
        out[:, i] *= 2.0 / (hi - lo)  # Slaney: every triangle has unit area in Hz
    return out


def reference_logmel(audio: np.ndarray, spec: AudioSpec) -> np.ndarray:
    """float64 [N, n_mels, frames]: Hann-windowed frames, rfft, power, mel, log."""
    audio = audio.astype(np.float64)
    frames = spec.num_frames
    index = np.arange(spec.n_fft)[None, :] + spec.hop_length * np.arange(frames)[:, None]
    n = np.arange(spec.n_fft)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * n / spec.n_fft)  # periodic Hann
    spectrum = np.fft.rfft(audio[:, index] * window, axis=-1)  # [N, frames, bins]
    power = spectrum.real**2 + spectrum.imag**2
    mel = power @ reference_filterbank(spec)  # [N, frames, n_mels]
    return np.log(mel + spec.log_floor).transpose(0, 2, 1)


def test_signal(spec: AudioSpec, n: int = 3, seed: int = 0) -> np.ndarray:
    """Tones, a chirp and noise at speech-like levels: every mel band gets energy."""
    rng = np.random.default_rng(seed)
    t = np.arange(spec.num_samples) / spec.sample_rate
    nyquist = spec.sample_rate / 2
    rows = [
        0.3 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 0.3 * nyquist * t),
        0.5 * np.sin(2 * np.pi * (50 + 0.4 * nyquist * t / t[-1]) * t),
        0.1 * rng.standard_normal(t.size),
    ]
    return (np.stack(rows[:n]) + 0.01 * rng.standard_normal((n, t.size))).astype(np.float32)


test_signal.__test__ = False  # a helper, not a test


@pytest.mark.parametrize("name", list(SPECS))
def test_filterbank_matches_the_triangles_written_out(name: str) -> None:
    spec = SPECS[name]
    fb = mel_filterbank(spec)
    assert fb.shape == (spec.n_fft // 2 + 1, spec.n_mels)
    assert fb.dtype == np.float32
    assert (fb >= 0).all()
    np.testing.assert_allclose(fb, reference_filterbank(spec), rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("name", list(SPECS))
def test_filterbank_bands_are_ordered_non_empty_and_equal_area(name: str) -> None:
    spec = SPECS[name]
    fb = mel_filterbank(spec).astype(np.float64)
    freqs = np.arange(spec.n_fft // 2 + 1) * spec.sample_rate / spec.n_fft
    assert (fb.max(axis=0) > 0).all(), "a mel band covers no DFT bin"
    peaks = freqs[fb.argmax(axis=0)]
    assert (np.diff(peaks) >= 0).all(), "band peaks are not in increasing frequency"
    top = spec.f_max if spec.f_max is not None else spec.sample_rate / 2
    assert fb[(freqs < spec.f_min) | (freqs > top)].sum() == 0, "energy outside f_min..f_max"
    # Unit area in Hz (Slaney), checked where a band spans enough bins to integrate.
    edges = band_edges(spec)
    bin_hz = spec.sample_rate / spec.n_fft
    wide = (edges[2:] - edges[:-2]) >= 8 * bin_hz
    assert wide.any()
    np.testing.assert_allclose(fb[:, wide].sum(axis=0) * bin_hz, 1.0, rtol=0.05)


@pytest.mark.parametrize("name", list(SPECS))
def test_logmel_matches_numpy_rfft_reference(name: str) -> None:
    spec = SPECS[name]
    audio = test_signal(spec)
    with torch.no_grad():
        got = LogMel(spec)(torch.from_numpy(audio)).numpy()
    assert got.shape == (3, 1, spec.n_mels, spec.num_frames)
    assert got.dtype == np.float32
    want = reference_logmel(audio, spec)
    # float32 DFT against float64: measured at most 3e-5 apart, 1e-6 on average.
    np.testing.assert_allclose(got[:, 0], want, atol=2e-4, rtol=0)
    assert np.abs(got[:, 0] - want).mean() < 1e-5


def test_logmel_of_silence_is_the_log_floor() -> None:
    spec = SPECS["tiny"]
    with torch.no_grad():
        got = LogMel(spec)(torch.zeros(2, spec.num_samples))
    torch.testing.assert_close(got, torch.full_like(got, np.log(spec.log_floor)))


@pytest.mark.parametrize("name", list(SPECS))
def test_1khz_tone_peaks_in_the_band_centred_nearest_1khz(name: str) -> None:
    spec = SPECS[name]
    t = np.arange(spec.num_samples) / spec.sample_rate
    tone = (0.5 * np.sin(2 * np.pi * 1000.0 * t)).astype(np.float32)[None]
    with torch.no_grad():
        logmel = LogMel(spec)(torch.from_numpy(tone)).numpy()[0, 0]  # [n_mels, frames]
    centres = band_edges(spec)[1:-1]
    want = int(np.argmin(np.abs(centres - 1000.0)))
    per_frame = logmel.argmax(axis=0)
    assert (per_frame == want).all(), (per_frame, want, centres[want])
    # And far above bands away from the tone.
    far = np.abs(centres - 1000.0) > 1000.0
    assert logmel[want].mean() > logmel[far].max() + 5.0


def test_logmel_gain_shifts_the_log_by_a_constant() -> None:
    spec = SPECS["tiny"]
    audio = torch.from_numpy(test_signal(spec, 1))
    with torch.no_grad():
        quiet, loud = LogMel(spec)(audio), LogMel(spec)(audio * 4)
    # Power scales by 16 -> log + ln(16) where the floor is negligible.
    strong = quiet > np.log(spec.log_floor) + 8
    assert strong.float().mean() > 0.25
    torch.testing.assert_close(
        (loud - quiet)[strong], torch.full_like(quiet[strong], np.log(16.0)), atol=1e-3, rtol=0
    )


def test_logmel_is_not_touched_by_autocast() -> None:
    spec = SPECS["tiny"]
    audio = torch.from_numpy(test_signal(spec, 2))
    logmel = LogMel(spec)
    with torch.no_grad():
        plain = logmel(audio)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = logmel(audio)
    assert mixed.dtype == torch.float32
    torch.testing.assert_close(mixed, plain)
