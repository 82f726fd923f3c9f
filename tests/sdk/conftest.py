"""Shared helpers for the sdk tests: tiny specs, and real media and manifest files on disk."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import cv2
import numpy as np
import pytest
import soundfile as sf

from fusionedge.spec import (
    AudioSpec,
    ComponentSpec,
    ImageSpec,
    ModelSpec,
    TextSpec,
    TokenizerSpec,
)

DEFAULT_LABELS = {
    "multiclass": ("bird", "cat", "dog"),
    "binary": ("no", "yes"),
    "multilabel": ("a", "b", "c"),
    "regression": ("age",),
}


_DEFAULT: Any = object()


def build_spec(
    modalities: Sequence[str] = ("image", "audio", "text"),
    task: str = "multiclass",
    labels: Sequence[str] | None = None,
    image: ImageSpec | None = _DEFAULT,
    audio: AudioSpec | None = _DEFAULT,
    text: TextSpec | None = _DEFAULT,
    **overrides: Any,
) -> ModelSpec:
    """A small valid ModelSpec.

    A section left out gets tiny settings when its modality is in `modalities` (None
    otherwise); a section passed explicitly, None included, is used as given.
    """
    defaults = {
        "image": ImageSpec(height=16, width=24),
        "audio": AudioSpec(
            sample_rate=8000, num_samples=4000, n_fft=256, hop_length=128, n_mels=16
        ),
        "text": TextSpec(max_length=8, tokenizer=TokenizerSpec(vocab=tuple("abcdo "))),
    }
    given = {"image": image, "audio": audio, "text": text}
    kwargs: dict[str, Any] = {
        "modalities": tuple(modalities),
        "labels": tuple(labels if labels is not None else DEFAULT_LABELS[task]),
        "task": task,
        "encoders": {m: ComponentSpec(f"{m}_enc") for m in modalities},
        "fusion": ComponentSpec("concat"),
        "head": ComponentSpec("linear"),
    }
    for m, section in given.items():
        if section is not _DEFAULT:
            kwargs[m] = section
        elif m in modalities:
            kwargs[m] = defaults[m]
    kwargs.update(overrides)
    return ModelSpec(**kwargs)


@pytest.fixture
def make_spec() -> Callable[..., ModelSpec]:
    return build_spec


def write_png(path: Path, array: np.ndarray, ext: str = ".png") -> Path:
    """Writes array (OpenCV channel order) as an image file; parent folders are created."""
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array), f"cv2 could not write {path}"
    return path


def write_audio(path: Path, data: np.ndarray, rate: int, subtype: str | None = None) -> Path:
    """Writes [samples] or [samples, channels] audio with soundfile."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), data, rate, subtype=subtype)
    return path


def sine(freq: float, rate: int, seconds: float, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(round(rate * seconds)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def write_manifest(root: Path, lines: Sequence[dict[str, Any] | str]) -> Path:
    """Writes manifest.jsonl under root; dicts are JSON-encoded, strings written verbatim."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / "manifest.jsonl"
    text = "".join((json.dumps(x) if isinstance(x, dict) else x) + "\n" for x in lines)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def media() -> SimpleNamespace:
    """The file-writing helpers: media.png, media.audio, media.sine, media.manifest."""
    return SimpleNamespace(png=write_png, audio=write_audio, sine=sine, manifest=write_manifest)
