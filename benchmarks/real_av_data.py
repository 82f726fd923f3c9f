"""A real image + audio data set, one manifest per leave-one-speaker-out fold.

Reads a folder laid out like real-av-dev:

    fsdd/{digit}_{speaker}_{index}.wav     spoken digits (FSDD, 8 kHz mono)
    *.npz with `images` uint8 [N, 28, 28] and `labels` [N]    handwritten digits (MNIST)

and writes

    OUT/images/{i}.png          each digit degraded once, as a cheap camera would
    OUT/audio/{name}.wav        the recordings, unchanged (8 kHz)
    OUT/fold-{speaker}/manifest.jsonl

Every recording becomes one sample, paired with a handwritten image of the same digit.
In the fold of speaker S, S's recordings are the test split, the next speaker's the val
split (so early stopping reads a speaker the model never trained on, as it will meet one
in the field), and the rest train. The images are dealt into as many pools as there are
speakers; a fold's test samples take their images from its own pool and the others from
the rest, so no test image is ever seen in training either.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

RECORDING = re.compile(r"^(\d)_([A-Za-z]+)_(\d+)\.wav$")
IMAGE_SIDE = 56  # MNIST's 28 px doubled: what a camera crop of a card would hold


@dataclass(frozen=True)
class Recording:
    path: Path
    digit: int
    speaker: str


def find_recordings(root: Path) -> list[Recording]:
    folder = root / "fsdd"
    found = []
    for path in sorted(folder.glob("*.wav")):
        match = RECORDING.match(path.name)
        if match:
            found.append(Recording(path, int(match[1]), match[2]))
    if not found:
        raise FileNotFoundError(f"no {{digit}}_{{speaker}}_{{index}}.wav recordings in {folder}")
    return found


def find_digits(root: Path) -> tuple[np.ndarray, np.ndarray]:
    files = sorted(root.glob("*.npz"))
    if not files:
        raise FileNotFoundError(f"no .npz of handwritten digits (images, labels) in {root}")
    with np.load(files[0]) as archive:
        return archive["images"], archive["labels"].astype(np.int64)


def degrade(digit: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A 28x28 digit as a cheap camera shows it: soft, noisy, dim, partly covered."""
    x = cv2.resize(digit, (IMAGE_SIDE, IMAGE_SIDE), interpolation=cv2.INTER_LINEAR)
    x = x.astype(np.float32)
    # Low contrast and an exposure offset: ink and paper end up anywhere in a narrow range.
    contrast = rng.uniform(0.15, 0.8)
    paper = rng.uniform(0, 255 * (1 - contrast))
    x = paper + x * contrast
    x = cv2.GaussianBlur(x, (0, 0), rng.uniform(0.5, 2.5))
    if rng.random() < 0.6:  # a finger, a sticker, a shadow
        h, w = (rng.uniform(0.2, 0.55, 2) * IMAGE_SIDE).astype(int)
        top, left = rng.integers(0, IMAGE_SIDE - h), rng.integers(0, IMAGE_SIDE - w)
        x[top : top + h, left : left + w] = rng.uniform(0, 255)
    x = x + rng.normal(0, rng.uniform(5, 35), x.shape)
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def write_images(images: np.ndarray, out: Path, seed: int) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for i, digit in enumerate(images):
        path = out / f"{i}.png"
        if not path.exists():
            rng = np.random.default_rng([seed, i])
            cv2.imwrite(str(path), degrade(digit, rng))


def write_fold(
    recordings: list[Recording],
    labels: np.ndarray,
    speakers: list[str],
    test_speaker: str,
    out: Path,
    seed: int,
) -> Path:
    k = speakers.index(test_speaker)
    val_speaker = speakers[(k + 1) % len(speakers)]
    pool = np.arange(len(labels)) % len(speakers)
    rng = np.random.default_rng([seed, k])
    # Per (split side, digit): a shuffled queue of image indices, cycled if it runs out.
    queues: dict[tuple[bool, int], list[int]] = {}
    for is_test in (True, False):
        for digit in range(10):
            chosen = np.flatnonzero((labels == digit) & ((pool == k) == is_test))
            queues[(is_test, digit)] = list(rng.permutation(chosen))
    taken: dict[tuple[bool, int], int] = {}
    folder = out / f"fold-{test_speaker}"
    folder.mkdir(parents=True, exist_ok=True)
    # The folds share OUT/images and OUT/audio, outside each fold's folder: the header
    # line opts in to such paths (README, "Data set format").
    lines = [json.dumps({"fusionedge_manifest": 1, "allow_outside_paths": True})]
    for r in recordings:
        is_test = r.speaker == test_speaker
        key = (is_test, r.digit)
        n = taken.get(key, 0)
        taken[key] = n + 1
        image = queues[key][n % len(queues[key])]
        split = "test" if is_test else "val" if r.speaker == val_speaker else "train"
        sample = {
            "id": r.path.stem,
            "image": f"../images/{image}.png",
            "audio": f"../audio/{r.path.name}",
            "label": str(r.digit),
            "group": r.speaker,
            "split": split,
        }
        lines.append(json.dumps(sample))
    (folder / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def build(root: str | Path, out: str | Path, seed: int = 0) -> dict[str, Path]:
    """Writes the data set; returns {test speaker: fold folder}. Reuses files already there."""
    root, out = Path(root), Path(out)
    recordings = find_recordings(root)
    images, labels = find_digits(root)
    speakers = sorted({r.speaker for r in recordings})
    if len(speakers) < 3:
        raise ValueError(f"leave-one-speaker-out needs at least 3 speakers, found {speakers}")
    write_images(images, out / "images", seed)
    audio = out / "audio"
    audio.mkdir(parents=True, exist_ok=True)
    for r in recordings:
        if not (audio / r.path.name).exists():
            shutil.copyfile(r.path, audio / r.path.name)
    return {s: write_fold(recordings, labels, speakers, s, out, seed) for s in speakers}
