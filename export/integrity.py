"""Sealing an exported file: its golden cases, then the digest over everything
(fusionedge.integrity has the formats and why).

Both are appended to the file as metadata entries, after onnx.save wrote it: nothing is
re-serialised, so the digest is of the exact bytes a loader reads. seal() must be the
last write to a file; anything written after it (another metadata entry, a new weight)
makes the runtime refuse the file as changed after export.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fusionedge.contract import (
    DIGEST_KEY,
    FRONTEND_PART,
    FUSION_PART,
    GOLDEN_KEY,
    INPUT_NAMES,
    OUTPUT_NAMES,
    PRESENT,
    embedding_input,
)
from fusionedge.integrity import (
    GOLDEN_CASES,
    GOLDEN_SEED,
    GoldenCases,
    example_inputs,
    file_digest,
    golden_present,
    metadata_entry,
    metadata_keys,
    without_digest,
)
from fusionedge.spec import ModelSpec

CPU = "CPUExecutionProvider"


def golden_cases(path: Path, spec: ModelSpec, seed: int = GOLDEN_SEED) -> GoldenCases:
    """The scores the file at path gives on GOLDEN_CASES seeded inputs, in ONNX Runtime on
    the CPU (the reference every other machine is held to).

    Raises:
        ValueError: the file gives non-finite scores on them (a broken model).
    """
    present = golden_present(len(spec.modalities), GOLDEN_CASES)
    inputs = example_inputs(spec, GOLDEN_CASES, seed, present)
    scores = _session(path).run([OUTPUT_NAMES[0]], inputs)[0]
    return _golden(path, seed, present, scores)


def split_golden_cases(folder: Path, spec: ModelSpec, seed: int = GOLDEN_SEED) -> GoldenCases:
    """golden_cases of a split model's folder: its parts composed as runtime/split.py
    composes them (each encoder, the audio front end first where there is one, then the
    fusion part). Stored in the fusion part, which the runtime reads the spec from."""
    present = golden_present(len(spec.modalities), GOLDEN_CASES)
    inputs = example_inputs(spec, GOLDEN_CASES, seed, present)
    feeds = {PRESENT: present}
    for m in spec.modalities:
        encoder = _session(folder / f"{m}.onnx")
        x = {INPUT_NAMES[m]: inputs[INPUT_NAMES[m]]}
        if m == "audio" and (folder / f"{FRONTEND_PART}.onnx").is_file():
            logmel = _session(folder / f"{FRONTEND_PART}.onnx").run(None, x)[0]
            x = {encoder.get_inputs()[0].name: logmel}
        embedding = encoder.run([OUTPUT_NAMES[1]], x)[0]
        feeds[embedding_input(m)] = embedding
    scores = _session(folder / f"{FUSION_PART}.onnx").run([OUTPUT_NAMES[0]], feeds)[0]
    return _golden(folder, seed, present, scores)


def _session(path: Path) -> Any:
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=[CPU])


def _golden(path: Path, seed: int, present: np.ndarray, scores: np.ndarray) -> GoldenCases:
    import onnxruntime as ort

    if not np.isfinite(scores).all():
        raise ValueError(f"{path}: the exported model gives non-finite scores on seeded inputs")
    where = f"onnxruntime {ort.__version__} {CPU}"
    return GoldenCases(seed, present, scores.astype(np.float64), where)


def stamp_digest(path: Path) -> str:
    """Replaces the file's digest entry (if any) by the digest of its bytes; returns it."""
    data = without_digest(path.read_bytes())
    digest, _ = file_digest(data)
    path.write_bytes(data + metadata_entry(DIGEST_KEY, digest))
    return digest


def seal(path: str | Path, golden: GoldenCases | None = None) -> dict[str, Any]:
    """Appends the golden cases (a file with `scores`) and then the digest to a file
    onnx.save wrote; returns facts for the export report.

    Raises:
        ValueError: the file has golden cases already (seal a file once).
    """
    path = Path(path)
    facts: dict[str, Any] = {}
    if golden is not None:
        if GOLDEN_KEY in metadata_keys(path.read_bytes()):
            # Two entries under one key: which one a reader keeps is up to the reader.
            raise ValueError(f"{path} already has golden cases; seal a file only once")
        with path.open("ab") as f:
            f.write(metadata_entry(GOLDEN_KEY, golden.to_json()))
        facts["golden_cases"] = len(golden.scores)
    facts["digest"] = stamp_digest(path)
    return facts
