"""Samples decoded once into raw files, for data sets larger than memory.

    arrays = write_decoded(records, spec, manifest_path, folder)
    batch = arrays.subset(rows)        # numpy rows, read from disk

load_arrays holds a whole split in memory: 71 kB a sample at 48x48 and 1 s of 16 kHz
audio, 214 kB at 224x224, so 100,000 samples would need 21 GB before the first step.
write_decoded decodes the same way (load_arrays, a chunk of samples at a time, so the
pixels and samples are exactly those of the in-memory path) and appends each chunk to
one raw file per model input; the SampleArrays it returns holds the small parts (ids,
present, targets) in memory and reads image, audio and token rows from the files as a
batch asks for them (fusionedge.disk_array.DiskArray). Memory stays at one chunk while
writing and one batch while training, whatever the data set's size.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fusionedge.arrays import SampleArrays, encode_targets, load_arrays
from fusionedge.contract import PRESENT, input_layout
from fusionedge.disk_array import DiskArray
from fusionedge.manifest import ManifestError, Problem, Record
from fusionedge.spec import ModelSpec

# Decoded bytes per chunk while writing: large enough for the decoding threads to keep
# every core busy, small next to any machine's memory.
CHUNK_BYTES = 64 << 20


def decoded_bytes(spec: ModelSpec, n: int) -> int:
    """Bytes that n samples take decoded in the model's layout (all inputs)."""
    return n * row_bytes(spec)


def row_bytes(spec: ModelSpec) -> int:
    layout = input_layout(spec)
    return sum(int(np.prod(shape)) * np.dtype(dtype).itemsize for dtype, shape in layout.values())


def write_decoded(
    records: list[Record],
    spec: ModelSpec,
    manifest_path: Path,
    folder: str | Path,
    with_targets: bool = True,
) -> SampleArrays:
    """Decodes records into raw files in folder; returns arrays that read them by rows.

    Raises:
        ManifestError: naming every file that failed to decode (all chunks are decoded
            first, so one run reports every problem, as load_arrays does).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    layout = {k: v for k, v in input_layout(spec).items() if k != PRESENT}
    chunk = max(1, CHUNK_BYTES // max(1, row_bytes(spec)))
    present, problems = [], []
    files = {name: (folder / f"{name}.raw").open("wb") for name in layout}
    try:
        for start in range(0, len(records), chunk):
            part = records[start : start + chunk]
            try:
                arrays = load_arrays(part, spec, manifest_path, with_targets=False)
            except ManifestError as e:
                problems.extend(e.problems)
                continue
            for name, f in files.items():  # SampleArrays' fields are the input names
                getattr(arrays, name).tofile(f)
            present.append(arrays.present)
    finally:
        for f in files.values():
            f.close()
    if problems:
        raise ManifestError(sorted(problems, key=_line))
    n = len(records)
    columns = {
        name: DiskArray(folder / f"{name}.raw", dtype, (n, *shape))
        for name, (dtype, shape) in layout.items()
    }
    targets = encode_targets(records, spec, manifest_path) if with_targets else None
    all_present = np.concatenate(present) if present else np.zeros((0, len(spec.modalities)), bool)
    return SampleArrays([r.id for r in records], all_present, targets=targets, **columns)


def _line(problem: Problem) -> int:
    return problem.line
