"""Decode manifest records into the model's input arrays (numpy; used by training and eval)."""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fusionedge.contract import INPUT_NAMES, PRESENT, input_layout
from fusionedge.disk_array import DiskArray
from fusionedge.manifest import ManifestError, Problem, Record
from fusionedge.preprocess import MediaError, load_audio, load_image
from fusionedge.spec import ModelSpec
from fusionedge.tokenizer import Tokenizer

log = logging.getLogger(__name__)

# An input column: in memory, or rows in a file read as they are indexed.
Rows = np.ndarray | DiskArray


@dataclass
class SampleArrays:
    """A batch of samples in the model contract's layout.

    image, audio and tokens are numpy arrays, or DiskArrays (fusionedge.decoded) for data
    sets decoded to disk: index them by rows (rows(), subset()), not as a whole.

    Attributes:
        ids: Sample ids, one per row.
        present: bool [N, M], column j for spec.modalities[j].
        image: uint8 [N, H, W, 3] RGB (zeros where absent), or None without an image input.
        audio: float32 [N, S] (zeros where absent), or None.
        tokens: int64 [N, L] (padding where absent), or None.
        targets: int64 [N] class ids, float32 [N, C] multi-hot, float32 [N, 1] regression
            targets, or None for unlabelled samples.
    """

    ids: list[str]
    present: np.ndarray
    image: Rows | None = None
    audio: Rows | None = None
    tokens: Rows | None = None
    targets: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def inputs(self) -> dict[str, np.ndarray]:
        """The model inputs by ONNX input name."""
        named = {"image": self.image, "audio": self.audio, "tokens": self.tokens}
        out = {k: v for k, v in named.items() if v is not None}
        out["present"] = self.present
        return out

    def rows(self, index: np.ndarray | slice) -> dict[str, np.ndarray]:
        """Some rows' model inputs by modality name, with "present" and "targets" (when
        labelled): numpy arrays, read from disk for arrays that live there."""
        named = {"image": self.image, "audio": self.audio, "text": self.tokens}
        out = {m: a[index] for m, a in named.items() if a is not None}
        out["present"] = self.present[index]
        if self.targets is not None:
            out["targets"] = self.targets[index]
        return out

    def subset(self, index: np.ndarray | slice) -> SampleArrays:
        def pick(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[index]

        ids = list(np.asarray(self.ids, dtype=object)[index])
        return SampleArrays(
            ids,
            self.present[index],
            pick(self.image),
            pick(self.audio),
            pick(self.tokens),
            pick(self.targets),
        )


def encode_targets(records: list[Record], spec: ModelSpec, manifest_path: Path) -> np.ndarray:
    """Turns record labels into the training targets of spec.task.

    Raises:
        ManifestError: a record has no label or a label the spec does not know.
    """
    problems: list[Problem] = []
    index = {name: i for i, name in enumerate(spec.labels)}

    def unknown(r: Record, value: object) -> None:
        problems.append(
            Problem(
                manifest_path,
                r.line,
                "label",
                f"{value!r} is not one of the model's labels {list(spec.labels)}",
            )
        )

    if spec.task in ("multiclass", "binary"):
        targets = np.zeros(len(records), dtype=np.int64)
        for i, r in enumerate(records):
            if not isinstance(r.label, str) or r.label not in index:
                unknown(r, r.label)
            else:
                targets[i] = index[r.label]
    elif spec.task == "multilabel":
        targets = np.zeros((len(records), len(spec.labels)), dtype=np.float32)
        for i, r in enumerate(records):
            if not isinstance(r.label, tuple) or any(c not in index for c in r.label):
                unknown(r, r.label)
            else:
                targets[i, [index[c] for c in r.label]] = 1.0
    else:
        targets = np.zeros((len(records), 1), dtype=np.float32)
        for i, r in enumerate(records):
            if not isinstance(r.label, float):
                problems.append(
                    Problem(
                        manifest_path,
                        r.line,
                        "label",
                        f"regression needs a number, got {r.label!r}",
                    )
                )
            else:
                targets[i, 0] = r.label
    if problems:
        raise ManifestError(problems)
    return targets


def load_arrays(
    records: list[Record],
    spec: ModelSpec,
    manifest_path: Path,
    with_targets: bool = True,
    workers: int | None = None,
) -> SampleArrays:
    """Decodes and converts every record's files to the spec, in parallel threads.

    Modalities the spec does not take are ignored; modalities a record lacks are marked
    absent in `present`. Decode failures are collected and raised together.

    Raises:
        ManifestError: naming each file that failed to decode, with its line and field.
    """
    n = len(records)
    zeros = {
        name: np.zeros((n, *shape), dtype) for name, (dtype, shape) in input_layout(spec).items()
    }
    present = zeros[PRESENT]
    image, audio, tokens = (zeros.get(INPUT_NAMES[m]) for m in ("image", "audio", "text"))
    if spec.text is not None:
        tokenizer = Tokenizer(spec.text)
    problems: list[Problem] = []

    def decode(i: int) -> None:
        r = records[i]
        for j, m in enumerate(spec.modalities):
            if not r.has(m):
                continue
            try:
                if m == "image":
                    image[i] = load_image(r.image, spec.image)  # type: ignore[index,arg-type]
                elif m == "audio":
                    audio[i] = load_audio(r.audio, spec.audio)  # type: ignore[index,arg-type]
                else:
                    tokens[i] = tokenizer.encode(r.text)  # type: ignore[index,arg-type]
            except MediaError as e:
                problems.append(Problem(manifest_path, r.line, m, str(e)))
            else:
                present[i, j] = True

    # cv2 and libsndfile release the GIL while decoding, so threads scale across cores.
    with ThreadPoolExecutor(max_workers=workers or min(8, os.cpu_count() or 1)) as pool:
        list(pool.map(decode, range(n)))
    if problems:
        problems.sort(key=lambda p: p.line)
        raise ManifestError(problems)
    targets = encode_targets(records, spec, manifest_path) if with_targets else None
    return SampleArrays([r.id for r in records], present, image, audio, tokens, targets)
