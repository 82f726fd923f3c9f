"""Seeded corruptions of model inputs, for robustness evaluation (numpy + cv2, no torch).

Each function works on what the model contract takes (uint8 RGB images [N, H, W, 3],
float32 mono PCM [N, S] in [-1, 1]) or, for text, on raw strings before tokenising, so a
corruption means the same for a run folder evaluated in PyTorch and for an .onnx file.
The same (input, level, seed) always gives the same output.
"""

from __future__ import annotations

import string
from collections.abc import Sequence

import cv2
import numpy as np

TYPO_ALPHABET = string.ascii_lowercase


def _check_images(images: np.ndarray) -> None:
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3:
        raise ValueError(
            f"images: expected uint8 [N, H, W, 3], got {images.dtype} {list(images.shape)}"
        )


def image_noise(images: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    """Adds Gaussian noise of standard deviation `sigma` (in 0-255 pixel units), clipped."""
    _check_images(images)
    if sigma < 0:
        raise ValueError(f"sigma must be 0 or more, got {sigma}")
    rng = np.random.default_rng(seed)
    noisy = images.astype(np.float32) + rng.normal(0.0, sigma, images.shape).astype(np.float32)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def image_blur(images: np.ndarray, kernel: int) -> np.ndarray:
    """Gaussian blur with an odd `kernel` size in pixels (1 leaves the images as they are)."""
    _check_images(images)
    if kernel < 1 or kernel % 2 == 0:
        raise ValueError(f"kernel must be an odd size of 1 or more, got {kernel}")
    if kernel == 1:
        return images.copy()
    return np.stack([cv2.GaussianBlur(im, (kernel, kernel), 0) for im in images])


def occlusion_box(height: int, width: int, fraction: float) -> tuple[int, int]:
    """Height and width of a box covering `fraction` of an image, as square as fits."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    area = fraction * height * width
    h = min(height, max(0, round(np.sqrt(area))))
    w = min(width, round(area / h)) if h else 0
    # A box clipped to the width is made taller so the covered area still matches.
    if w == width and h < height:
        h = min(height, round(area / width))
    return h, w


def image_occlusion(images: np.ndarray, fraction: float, seed: int = 0) -> np.ndarray:
    """Covers `fraction` of each image with a grey box at a seeded random place (a finger
    or a sticker on the lens)."""
    _check_images(images)
    n, height, width, _ = images.shape
    h, w = occlusion_box(height, width, fraction)
    out = images.copy()
    if h == 0 or w == 0:
        return out
    rng = np.random.default_rng(seed)
    tops = rng.integers(0, height - h + 1, n)
    lefts = rng.integers(0, width - w + 1, n)
    for i in range(n):
        out[i, tops[i] : tops[i] + h, lefts[i] : lefts[i] + w] = 128
    return out


def audio_noise(audio: np.ndarray, snr_db: float, seed: int = 0) -> np.ndarray:
    """Adds white noise at `snr_db` decibels below each row's own power.

    The noise is scaled to the exact power the SNR asks for, per row, so the achieved SNR
    is the requested one up to clipping to [-1, 1] (as a real microphone clips). A silent
    row stays silent: it has no signal to compare the noise with.
    """
    if audio.ndim != 2 or not np.issubdtype(audio.dtype, np.floating):
        raise ValueError(f"audio: expected float PCM [N, S], got {audio.dtype} {list(audio.shape)}")
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal(audio.shape)
    signal_power = np.mean(audio.astype(np.float64) ** 2, axis=1, keepdims=True)
    noise_power = np.mean(noise**2, axis=1, keepdims=True)
    scale = np.sqrt(signal_power / (noise_power * 10.0 ** (snr_db / 10.0)))
    return np.clip(audio + noise * scale, -1.0, 1.0).astype(audio.dtype)


def snr_db(clean: np.ndarray, noisy: np.ndarray) -> np.ndarray:
    """Per-row signal-to-noise ratio in dB of a noisy copy of clean [N, S] audio."""
    noise = noisy.astype(np.float64) - clean
    return 10.0 * np.log10(
        np.mean(clean.astype(np.float64) ** 2, axis=1) / np.mean(noise**2, axis=1)
    )


def text_typos(
    texts: Sequence[str | None], rate: float, seed: int = 0, alphabet: str = TYPO_ALPHABET
) -> list[str | None]:
    """Replaces, drops or inserts a character at each position with probability `rate`.

    The three kinds of typo are equally likely; replacements and insertions draw from
    `alphabet` (pass the model's vocabulary so a typo is a wrong letter, not an unknown
    one). None (no text) stays None.
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"rate must be in [0, 1], got {rate}")
    if not alphabet:
        raise ValueError("alphabet must not be empty")
    rng = np.random.default_rng(seed)
    out: list[str | None] = []
    for text in texts:
        if text is None:
            out.append(None)
            continue
        chars: list[str] = []
        for c in text:
            if rng.random() >= rate:
                chars.append(c)
                continue
            kind = rng.integers(3)
            if kind == 0:  # substitution: a different character
                choices = [a for a in alphabet if a != c] or list(alphabet)
                chars.append(choices[rng.integers(len(choices))])
            elif kind == 2:  # insertion before the character
                chars += [alphabet[rng.integers(len(alphabet))], c]
            # kind 1: deletion
        out.append("".join(chars))
    return out
