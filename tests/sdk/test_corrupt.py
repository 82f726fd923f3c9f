"""Corruptions for robustness evaluation: deterministic, and at the level asked for."""

from __future__ import annotations

import numpy as np
import pytest

from fusionedge import corrupt


def images(n: int = 4, h: int = 20, w: int = 24) -> np.ndarray:
    rng = np.random.default_rng(1)
    return rng.integers(60, 200, (n, h, w, 3), dtype=np.uint8)


def tones(n: int = 3, s: int = 8000) -> np.ndarray:
    # Quiet enough that even -5 dB of noise stays inside [-1, 1] (clipping would lower
    # the achieved SNR, as it does on a real microphone).
    t = np.arange(s) / 8000
    amps = np.array([0.02, 0.05, 0.1])[:n, None]
    return (amps * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def test_same_seed_same_output_and_other_seed_differs() -> None:
    im, pcm = images(), tones()
    assert np.array_equal(corrupt.image_noise(im, 25, 3), corrupt.image_noise(im, 25, 3))
    assert not np.array_equal(corrupt.image_noise(im, 25, 3), corrupt.image_noise(im, 25, 4))
    assert np.array_equal(corrupt.image_occlusion(im, 0.3, 3), corrupt.image_occlusion(im, 0.3, 3))
    assert np.array_equal(corrupt.audio_noise(pcm, 5, 3), corrupt.audio_noise(pcm, 5, 3))
    texts = ["seven", None, "three and four"]
    assert corrupt.text_typos(texts, 0.3, 3) == corrupt.text_typos(texts, 0.3, 3)


def test_image_noise_has_the_asked_spread_and_keeps_dtype() -> None:
    im = np.full((2, 64, 64, 3), 128, np.uint8)
    out = corrupt.image_noise(im, 20, 0)
    assert out.dtype == np.uint8 and out.shape == im.shape
    assert abs(float((out.astype(float) - 128).std()) - 20) < 1.0


def test_blur_smooths_and_kernel_one_is_identity() -> None:
    im = images()
    assert np.array_equal(corrupt.image_blur(im, 1), im)
    blurred = corrupt.image_blur(im, 7)
    assert blurred.std() < im.std() * 0.6
    with pytest.raises(ValueError, match="odd"):
        corrupt.image_blur(im, 4)


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.25, 0.5, 0.75, 1.0])
def test_occlusion_covers_the_asked_fraction(fraction: float) -> None:
    # Pixels that are never 128 before, so every 128 afterwards is the box.
    im = np.full((3, 30, 40, 3), 7, np.uint8)
    out = corrupt.image_occlusion(im, fraction, 0)
    covered = (out == 128).all(axis=3).mean(axis=(1, 2))
    assert np.allclose(covered, fraction, atol=0.02)


@pytest.mark.parametrize("snr", [20, 10, 5, 0, -5])
def test_audio_noise_achieves_the_snr(snr: float) -> None:
    pcm = tones()
    noisy = corrupt.audio_noise(pcm, snr, 0)
    assert noisy.dtype == np.float32 and noisy.shape == pcm.shape
    assert np.all(np.abs(corrupt.snr_db(pcm, noisy) - snr) < 0.5)


def test_silent_audio_stays_silent() -> None:
    pcm = np.zeros((2, 100), np.float32)
    assert np.array_equal(corrupt.audio_noise(pcm, 0, 0), pcm)


def test_typo_rate_is_close_to_the_asked_rate() -> None:
    # Text of one letter and typos from other letters: a lost "a" is a substitution or a
    # deletion, a foreign letter a substitution or an insertion; each kind is rate / 3.
    n = 6000
    for rate in (0.0, 0.1, 0.4):
        (out,) = corrupt.text_typos(["a" * n], rate, 0, alphabet="xyz")
        assert (out == "a" * n) == (rate == 0.0)
        lost = (n - out.count("a")) / n
        foreign = (len(out) - out.count("a")) / n
        assert abs(lost - 2 * rate / 3) < 0.02 and abs(foreign - 2 * rate / 3) < 0.02
    assert corrupt.text_typos([None], 0.5, 0) == [None]


def test_bad_levels_are_refused_with_the_accepted_range() -> None:
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        corrupt.image_occlusion(images(), 1.5, 0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        corrupt.text_typos(["a"], -0.1, 0)
    with pytest.raises(ValueError, match="uint8"):
        corrupt.image_noise(np.zeros((2, 4, 4, 3), np.float32), 5, 0)
