"""avdigits: the built-in demo data set, shaped like the live demo.

Each sample is one moment of someone showing a digit card to a camera and saying the
digit into a microphone, sometimes with a typed hint. Per sample at most one of camera
and microphone fails (covered, out of view, drowned in noise, the mic off...), so each
modality alone is right only part of the time while the pair almost always holds the
answer: the data set rewards fusion, as the real demo does.

The data set is a plain manifest folder (img/*.jpg, wav/*.wav, manifest.jsonl), the same
format users bring, so everything downstream runs on it unchanged.
"""

from __future__ import annotations

import json
import logging
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from fusionedge.demo import DEFAULT_SAMPLES
from fusionedge.manifest import MANIFEST_NAME, split_for_id
from fusionedge.version import __version__

log = logging.getLogger(__name__)

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

SAMPLE_RATE = 16000
WINDOW_SAMPLES = 16000
# What can go wrong per sample: nothing, the camera, or the microphone (never both, so
# the pair always carries the digit). Text is a bonus that is usually absent.
CORRUPTION = {"none": 0.40, "image": 0.30, "audio": 0.30}
TEXT_PROBABILITY = 0.40
FRAME_SIZES = ((96, 96), (96, 128), (120, 160))  # (height, width): a few camera shapes
TEMPLATES = (
    "{w}",
    "{d}",
    "it is {w}",
    "it's {d}",
    "number {w}",
    "the digit {d}",
    "{w}!",
    "i think {w}",
    "{d} please",
    "shows {w}",
)


def typo(word: str, rng: np.random.Generator) -> str:
    """One keyboard slip: a dropped, doubled, swapped or replaced letter."""
    if len(word) < 3:
        return word
    i = int(rng.integers(0, len(word) - 1))
    kind = rng.integers(4)
    if kind == 0:
        return word[:i] + word[i + 1 :]
    if kind == 1:
        return word[:i] + word[i] + word[i:]
    if kind == 2:
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    return word[:i] + "qwertyuiopasdfghjklzxcvbnm"[rng.integers(26)] + word[i + 1 :]


def text_hint(digit: int, rng: np.random.Generator) -> str:
    """A short typed hint such as "it is 7", "seven" or "sevn"."""
    word = DIGIT_WORDS[digit]
    if rng.random() < 0.25:
        word = typo(word, rng)
    text = TEMPLATES[rng.integers(len(TEMPLATES))].format(w=word, d=digit)
    return text.upper() if rng.random() < 0.1 else text


def make_sample(index: int, seed: int, root: str) -> dict[str, Any]:
    """Renders, records and writes sample `index`; deterministic in (seed, index)."""
    from fusionedge.demo.cards import corrupt_frame, render_card
    from fusionedge.demo.speech import augment_speech, corrupt_speech, load_speech_bank

    rng = np.random.default_rng([seed, index])
    digit = int(rng.integers(10))
    sample_id = f"av{index:05d}"
    broken = rng.choice(list(CORRUPTION), p=list(CORRUPTION.values()))

    frame = render_card(digit, rng, size=FRAME_SIZES[rng.integers(len(FRAME_SIZES))])
    if broken == "image":
        frame = corrupt_frame(frame, rng)
    image_rel = f"img/{sample_id}.jpg"
    ok, jpeg = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 90])
    if not ok:
        raise RuntimeError(f"JPEG encoding failed for {sample_id}")
    (Path(root) / image_rel).write_bytes(jpeg.tobytes())

    bank = load_speech_bank(SAMPLE_RATE)[digit]
    audio = augment_speech(bank[rng.integers(len(bank))], rng, SAMPLE_RATE, WINDOW_SAMPLES)
    if broken == "audio":
        audio = corrupt_speech(audio, rng, SAMPLE_RATE)
    audio_rel = f"wav/{sample_id}.wav"
    import soundfile

    soundfile.write(str(Path(root) / audio_rel), audio, SAMPLE_RATE, subtype="PCM_16")

    line: dict[str, Any] = {"id": sample_id, "image": image_rel, "audio": audio_rel}
    if rng.random() < TEXT_PROBABILITY:
        line["text"] = text_hint(digit, rng)
    line.update(label=DIGIT_WORDS[digit], split=split_for_id(sample_id), _corrupted=str(broken))
    return line


def generate(
    out: str | Path, n: int = DEFAULT_SAMPLES, seed: int = 0, workers: int = 0
) -> dict[str, Any]:
    """Writes the avdigits data set to `out`.

    Args:
        out: Folder to create; an existing manifest there is refused, not overwritten.
        n: Number of samples.
        seed: The same (seed, n) gives byte-identical files.
        workers: Processes; 0 uses every core.

    Returns:
        A summary: n, manifest path, samples per split, seconds taken.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    out = Path(out)
    manifest = out / MANIFEST_NAME
    if manifest.exists():
        raise FileExistsError(f"{manifest} exists; choose an empty folder for new demo data")
    (out / "img").mkdir(parents=True, exist_ok=True)
    (out / "wav").mkdir(exist_ok=True)
    start = time.perf_counter()
    workers = workers or os.cpu_count() or 1
    if workers == 1:
        lines = [make_sample(i, seed, str(out)) for i in range(n)]
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            lines = list(
                pool.map(
                    make_sample,
                    range(n),
                    [seed] * n,
                    [str(out)] * n,
                    chunksize=max(1, n // (8 * workers)),
                )
            )
    # The manifest is written last and in one rename: a half-generated folder never
    # looks like a finished data set.
    tmp = manifest.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    os.replace(tmp, manifest)
    splits = {s: sum(1 for x in lines if x["split"] == s) for s in ("train", "val", "test")}
    info = {
        "name": "avdigits",
        "n": n,
        "seed": seed,
        "fusionedge_version": __version__,
        "corruption": CORRUPTION,
        "text_probability": TEXT_PROBABILITY,
        "splits": splits,
    }
    (out / "info.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    seconds = time.perf_counter() - start
    log.info("avdigits: %d samples in %.1f s (%d workers)", n, seconds, workers)
    return {"n": n, "manifest": str(manifest), "splits": splits, "seconds": seconds}
