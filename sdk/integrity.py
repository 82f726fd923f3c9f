"""What lets a model file check itself: a digest of its bytes, and golden cases.

Export writes both into the file's metadata; the runtime checks the digest at every load
and reruns the golden cases on request (`fusionedge info MODEL --verify`). Both sides
need the same code, and the runtime may not import export, so it lives here (standard
library and numpy only).

The digest (`fusionedge.digest`, "sha256:<hex>") is the sha256 of the file's bytes as they
lie on disk, less the digest's own metadata entry: the ONNX ModelProto's top-level fields
are walked in the protobuf wire format (a handful of fields; the graph is one of them and
is hashed without being parsed) and every field but that entry is hashed in file order.
Nothing is re-serialised, so the figure does not depend on which protobuf library wrote
or reads the file; it covers the graph, the weights, the spec, the golden cases and every
other metadata entry, so any edit after export shows.

Golden cases (`fusionedge.golden`): GOLDEN_CASES inputs made by example_inputs from a
seed, and the scores the file itself gave on them at export (ONNX Runtime, CPU), rounded
to 7 significant digits. Only the seed, the presence mask and the scores are stored:
example_inputs draws from a generator written here (splitmix64 over a counter) rather
than numpy's, whose streams may change between versions, so any machine rebuilds the
same inputs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from fusionedge.contract import DIGEST_KEY, PRESENT, input_layout

if TYPE_CHECKING:
    from fusionedge.spec import ModelSpec

DIGEST_PREFIX = "sha256:"
GOLDEN_VERSION = 1
GOLDEN_SEED = 0
GOLDEN_CASES = 4
# Largest |score difference| a verification accepts, by the file's precision. fp32: the
# export parity tolerance. int8 and fp16 copies: one activation rounded the other way by
# a different CPU's kernels moves scores by about a quantisation step, and fp16 on CUDA
# accumulates differently from the CPU's fp32 fallback (export's FP16_TOLERANCE).
TOLERANCE = {"fp32": 1e-4, "int8": 1e-2, "fp16": 1e-2}

# The ModelProto fields read here (onnx.proto): metadata_props, and the key and value of
# a StringStringEntryProto.
METADATA_FIELD = 14
ENTRY_KEY_FIELD = 1
ENTRY_VALUE_FIELD = 2
VARINT, FIXED64, LENGTH_DELIMITED, FIXED32 = 0, 1, 2, 5


class IntegrityError(ValueError):
    """Bytes that are not a protobuf message, or a golden record that cannot be read."""


# ---------------------------------------------------------------------- protobuf wire


def _read_varint(data: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise IntegrityError("not a protobuf message: a varint runs past the end")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(data: memoryview) -> Iterator[tuple[int, int, int, int]]:
    """(field number, start, payload start, end) of each field of one message level."""
    pos = 0
    while pos < len(data):
        start = pos
        tag, pos = _read_varint(data, pos)
        number, wire = tag >> 3, tag & 7
        payload = pos
        if wire == VARINT:
            _, pos = _read_varint(data, pos)
        elif wire == FIXED64:
            pos += 8
        elif wire == LENGTH_DELIMITED:
            length, payload = _read_varint(data, pos)
            pos = payload + length
        elif wire == FIXED32:
            pos += 4
        else:
            raise IntegrityError(f"not a protobuf message: wire type {wire} at byte {start}")
        if pos > len(data) or number == 0:
            raise IntegrityError(f"not a protobuf message: field at byte {start} is cut off")
        yield number, start, payload, pos


def _entry_key(entry: memoryview) -> str | None:
    """The key of a metadata entry (StringStringEntryProto), None if it has none."""
    for number, _, payload, end in _fields(entry):
        if number == ENTRY_KEY_FIELD:
            return bytes(entry[payload:end]).decode("utf-8", errors="replace")
    return None


def _entry_value(entry: memoryview) -> str:
    for number, _, payload, end in _fields(entry):
        if number == ENTRY_VALUE_FIELD:
            return bytes(entry[payload:end]).decode("utf-8", errors="replace")
    return ""


def _digest_spans(data: memoryview) -> Iterator[tuple[bool, int, int, int]]:
    """(is a digest entry, start, payload start, end) of each top-level field, in order."""
    for number, start, payload, end in _fields(data):
        is_digest = number == METADATA_FIELD and _entry_key(data[payload:end]) == DIGEST_KEY
        yield is_digest, start, payload, end


def file_digest(data: bytes) -> tuple[str, list[str]]:
    """(the digest these model file bytes have, the digests stored in them).

    Raises:
        IntegrityError: the bytes are not a protobuf message.
    """
    view = memoryview(data)
    sha = hashlib.sha256()
    stored = []
    for is_digest, start, payload, end in _digest_spans(view):
        if is_digest:
            stored.append(_entry_value(view[payload:end]))
        else:
            sha.update(view[start:end])
    return DIGEST_PREFIX + sha.hexdigest(), stored


def metadata_keys(data: bytes) -> list[str]:
    """The keys of a model file's metadata entries, in file order."""
    view = memoryview(data)
    return [
        _entry_key(view[payload:end]) or ""
        for number, _, payload, end in _fields(view)
        if number == METADATA_FIELD
    ]


def without_digest(data: bytes) -> bytes:
    """The model file bytes with every digest entry taken out (to stamp a new one)."""
    view = memoryview(data)
    return b"".join(view[s:e] for is_digest, s, _, e in _digest_spans(view) if not is_digest)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _length_delimited(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | LENGTH_DELIMITED) + _varint(len(payload)) + payload


def metadata_entry(key: str, value: str) -> bytes:
    """One ModelProto metadata entry as bytes. Appended to a model file, it adds the entry:
    protobuf readers accept fields in any order, and repeated fields accumulate."""
    entry = _length_delimited(ENTRY_KEY_FIELD, key.encode()) + _length_delimited(
        ENTRY_VALUE_FIELD, value.encode()
    )
    return _length_delimited(METADATA_FIELD, entry)


# ---------------------------------------------------------------------- seeded inputs

_GAMMA, _MIX1, _MIX2 = 0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB


def uniform(seed: int, stream: str, shape: tuple[int, ...]) -> np.ndarray:
    """float64 in [0, 1): splitmix64 over a counter, started from (seed, stream).

    The same on every machine and numpy version (integer arithmetic that wraps, then an
    exact conversion), which numpy's Generator does not promise.
    """
    start = int.from_bytes(hashlib.sha256(f"{seed}/{stream}".encode()).digest()[:8], "little")
    count = np.arange(1, int(np.prod(shape)) + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = np.uint64(start) + count * np.uint64(_GAMMA)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(_MIX1)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(_MIX2)
        z ^= z >> np.uint64(31)
    return ((z >> np.uint64(11)).astype(np.float64) * 2.0**-53).reshape(shape)


def integers(seed: int, stream: str, low: int, high: int, shape: tuple[int, ...]) -> np.ndarray:
    """int64 in [low, high), from uniform()."""
    return low + np.floor(uniform(seed, stream, shape) * (high - low)).astype(np.int64)


def example_inputs(
    spec: ModelSpec, batch: int, seed: int = 0, present: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Seeded inputs in the model contract's layout: uint8 images, PCM in [-0.25, 0.25],
    token ids that end in padding (PAD 0; ids 2.. are real tokens), every modality present
    unless a mask is given."""
    shape = {name: (batch, *dims) for name, (_, dims) in input_layout(spec).items()}
    out: dict[str, np.ndarray] = {}
    if spec.image is not None:
        out["image"] = integers(seed, "image", 0, 256, shape["image"]).astype(np.uint8)
    if spec.audio is not None:
        out["audio"] = (0.25 * (2 * uniform(seed, "audio", shape["audio"]) - 1)).astype(np.float32)
    if spec.text is not None:
        tokens = integers(seed, "tokens", 2, spec.text.tokenizer.vocab_size, shape["tokens"])
        # Real rows end in padding: random lengths, the rest PAD (0).
        lengths = integers(seed, "lengths", 0, spec.text.max_length + 1, (batch,))
        tokens[np.arange(spec.text.max_length)[None, :] >= lengths[:, None]] = 0
        out["tokens"] = tokens
    out[PRESENT] = np.ones(shape[PRESENT], dtype=bool) if present is None else present
    return out


# ---------------------------------------------------------------------- golden cases


def golden_present(modalities: int, cases: int = GOLDEN_CASES) -> np.ndarray:
    """Which modalities each golden case has: the first every one, the last none (the
    learned placeholders alone), those between one modality each, in turn."""
    present = np.zeros((cases, modalities), dtype=bool)
    present[0] = True
    for row in range(1, cases - 1):
        present[row, (row - 1) % modalities] = True
    return present


def significant(x: float, digits: int = 7) -> float:
    """x rounded to `digits` significant digits (float32 carries about 7)."""
    return float(f"{x:.{digits}g}")


@dataclass(frozen=True)
class GoldenCases:
    """Seeded inputs and the scores a file gave on them at export.

    Attributes:
        seed: example_inputs' seed.
        present: bool [cases, modalities], each case's presence mask.
        scores: float64 [cases, outputs], as computed at export.
        computed_on: Where the scores were computed ("onnxruntime 1.x CPUExecutionProvider").
    """

    seed: int
    present: np.ndarray
    scores: np.ndarray
    computed_on: str

    def inputs(self, spec: ModelSpec) -> dict[str, np.ndarray]:
        return example_inputs(spec, len(self.scores), self.seed, self.present)

    def to_json(self) -> str:
        record = {
            "version": GOLDEN_VERSION,
            "seed": self.seed,
            "present": self.present.astype(int).tolist(),
            "scores": [[significant(float(s)) for s in row] for row in self.scores],
            "computed_on": self.computed_on,
        }
        return json.dumps(record, allow_nan=False, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> GoldenCases:
        """Raises IntegrityError naming what is wrong with the record."""
        try:
            record: dict[str, Any] = json.loads(text)
            if record.get("version") != GOLDEN_VERSION:
                raise IntegrityError(
                    f"golden cases of version {record.get('version')!r}; this fusionedge "
                    f"reads version {GOLDEN_VERSION}"
                )
            present = np.array(record["present"], dtype=bool)
            scores = np.array(record["scores"], dtype=np.float64)
            golden = cls(int(record["seed"]), present, scores, str(record["computed_on"]))
        except (ValueError, KeyError, TypeError) as e:
            if isinstance(e, IntegrityError):
                raise
            raise IntegrityError(f"the golden cases cannot be read: {e}") from e
        if present.ndim != 2 or scores.ndim != 2 or len(present) != len(scores):
            raise IntegrityError(
                f"the golden cases cannot be read: present {list(present.shape)} and "
                f"scores {list(scores.shape)} must be [cases, ...] with one row per case"
            )
        return golden
