"""Manifest data sets: a folder with manifest.jsonl, one JSON object per sample.

    {"id": "s1", "image": "img/s1.png", "audio": "wav/s1.wav", "text": "seven",
     "label": "seven", "split": "train", "group": "speaker-3"}

A line without a split gets one from a stable hash of its group, or of its id when it has
no group, so that every sample of a speaker or session lands in the same split.

Reading validates every line and reports every problem at once, each with the file, the
line number and the field, so a user fixes a broken data set in one pass instead of one
error per run.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

from fusionedge.spec import MODALITIES, brief

MANIFEST_NAME = "manifest.jsonl"
SPLITS = ("train", "val", "test")
KEYS = ("id", "image", "audio", "text", "label", "split", "group")

# The optional header line: it must be the manifest's first line and carries settings of
# the whole data set. A line is the header when it has HEADER_KEY, a field no sample has.
HEADER_KEY = "fusionedge_manifest"
HEADER_VERSION = 1
HEADER_KEYS = (HEADER_KEY, "allow_outside_paths")
OPT_IN = (
    'a data set whose files live elsewhere says so on its first line: {"fusionedge_manifest": '
    '1, "allow_outside_paths": true}'
)

Label = Union[str, tuple[str, ...], float]  # noqa: UP007 (a runtime alias on Python 3.10)


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one line (line 0 means the manifest as a whole)."""

    path: Path
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else str(self.path)
        return (
            f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"
        )


class ManifestError(ValueError):
    """A data set has problems; `problems` lists each one."""

    def __init__(self, problems: list[Problem], limit: int = 20) -> None:
        self.problems = problems
        shown = "\n  ".join(str(p) for p in problems[:limit])
        more = f"\n  ... and {len(problems) - limit} more" if len(problems) > limit else ""
        super().__init__(f"{len(problems)} problem(s) in the data set:\n  {shown}{more}")


@dataclass(frozen=True)
class Record:
    """One validated manifest line. Paths are absolute; absent modalities are None.

    group names what the sample shares with others (a speaker, a session, a recording);
    None when the line has none.
    """

    id: str
    line: int
    split: str
    label: Label | None
    image: Path | None = None
    audio: Path | None = None
    text: str | None = None
    group: str | None = None

    def has(self, modality: str) -> bool:
        return getattr(self, modality) is not None


@dataclass(frozen=True)
class Manifest:
    """A validated data set.

    Attributes:
        path: The manifest file.
        records: Every line, in file order.
        modalities: The modalities any line has, in canonical order.
        label_kind: "class" (str labels), "multilabel" (lists) or "number".
        classes: Sorted class names (empty for numeric labels).
    """

    path: Path
    records: tuple[Record, ...]
    modalities: tuple[str, ...]
    label_kind: str
    classes: tuple[str, ...]

    @property
    def root(self) -> Path:
        return self.path.parent

    def split(self, name: str) -> list[Record]:
        if name not in SPLITS and name != "all":
            raise ValueError(f"split must be one of {(*SPLITS, 'all')}, got {name!r}")
        return list(self.records) if name == "all" else [r for r in self.records if r.split == name]


def split_for_id(sample_id: str, val_fraction: float = 0.1, test_fraction: float = 0.1) -> str:
    """The split a sample without one belongs to: a stable hash of its id.

    Hashing the id (not the line number) keeps a sample in the same split when lines are
    added, removed or reordered, so test samples never leak into training later. A line
    with a group passes the group's name here instead, which keeps the whole group in one
    split.
    """
    digest = hashlib.sha256(sample_id.encode("utf-8")).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    if u < test_fraction:
        return "test"
    if u < test_fraction + val_fraction:
        return "val"
    return "train"


def read_manifest(
    path: str | Path, require_labels: bool = True, check_files: bool = True
) -> Manifest:
    """Reads and validates a data set.

    Image and audio paths must resolve (symlinks and ".." followed) to files inside the
    manifest's folder, unless the first line is a header that opts out:
    {"fusionedge_manifest": 1, "allow_outside_paths": true}.

    Args:
        path: The data set folder or its manifest.jsonl.
        require_labels: Whether every line must carry a label (training and evaluation).
        check_files: Whether referenced image and audio files must exist.

    Raises:
        ManifestError: listing every problem found, with file, line and field.
        FileNotFoundError: there is no manifest at path.
    """
    path = _locate(path)
    reading = _Reading(path, path.parent.resolve(), require_labels, check_files)
    records: list[Record] = []
    first_line_of: dict[str, int] = {}
    for index, (number, obj) in enumerate(_json_lines(reading)):
        if obj is not None and HEADER_KEY in obj:
            _read_header(obj, number, index == 0, reading)
            continue
        record = _parse_line(obj, number, reading) if obj is not None else None
        if record is None:
            continue
        if record.id in first_line_of:
            first = first_line_of[record.id]
            reading.bad(number, "id", f"duplicate id {brief(record.id)} (first on line {first})")
            continue
        first_line_of[record.id] = number
        records.append(record)
    return _manifest(path, records, reading.problems)


def _locate(path: str | Path) -> Path:
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(
            f"no data set manifest at {path} (expected a folder with "
            f"{MANIFEST_NAME}, or the file itself)"
        )
    return path


def _manifest(path: Path, records: list[Record], problems: list[Problem]) -> Manifest:
    label_kind = _check_label_kinds(records, path, problems)
    if not records and not problems:
        problems.append(Problem(path, 0, "", "the manifest has no samples"))
    if problems:
        raise ManifestError(problems)
    modalities = tuple(m for m in MODALITIES if any(r.has(m) for r in records))
    classes: tuple[str, ...] = ()
    if label_kind == "class":
        classes = tuple(sorted({r.label for r in records if r.label is not None}))  # type: ignore[misc]
    elif label_kind == "multilabel":
        classes = tuple(sorted({c for r in records if r.label is not None for c in r.label}))  # type: ignore[union-attr]
    return Manifest(path, tuple(records), modalities, label_kind, classes)


@dataclass
class _Reading:
    """One manifest being read: what its lines are checked against, and what is wrong."""

    path: Path
    root: Path  # the manifest's folder, symlinks resolved: where its files must be
    require_labels: bool
    check_files: bool
    allow_outside: bool = False
    problems: list[Problem] = field(default_factory=list)

    def bad(self, number: int, field: str, message: str) -> None:
        self.problems.append(Problem(self.path, number, field, message))


def _json_lines(reading: _Reading) -> Iterator[tuple[int, dict | None]]:
    """(line number, JSON object) for each non-blank line; None for a line that is not a
    JSON object, after recording why."""
    with reading.path.open("rb") as f:
        for number, raw_bytes in enumerate(f, start=1):
            try:
                # utf-8-sig: a byte-order mark that an editor put on line 1 is not an error.
                raw = raw_bytes.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as e:
                byte = f"byte {raw_bytes[e.start]:#04x} at column {e.start + 1}"
                reading.bad(number, "", f"not UTF-8 text ({byte})")
                yield number, None
                continue
            if raw.strip():
                yield number, _decode(raw, number, reading)


def _decode(raw: str, number: int, reading: _Reading) -> dict | None:
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as e:
        reading.bad(number, "", f"not valid JSON ({e.msg} at column {e.colno})")
        return None
    except RecursionError:  # CPython's json recurses once per bracket
        reading.bad(number, "", "not valid JSON (nested too deeply to read)")
        return None
    except ValueError as e:  # an integer of more digits than CPython converts
        reading.bad(number, "", f"not valid JSON ({e})")
        return None
    if not isinstance(obj, dict):
        reading.bad(number, "", f"expected a JSON object, got {type(obj).__name__}")
        return None
    return obj


def _read_header(obj: dict, number: int, first: bool, reading: _Reading) -> None:
    """The optional first line, {"fusionedge_manifest": 1, "allow_outside_paths": true}."""
    version = obj[HEADER_KEY]
    if not first:
        reading.bad(number, HEADER_KEY, "a header belongs on the first line of the manifest")
    elif isinstance(version, bool) or not isinstance(version, int) or version < 1:
        reading.bad(number, HEADER_KEY, f"expected format version 1, got {brief(version)}")
    elif version > HEADER_VERSION:
        reading.bad(
            number,
            HEADER_KEY,
            f"format version {version} is newer than this fusionedge reads "
            f"({HEADER_VERSION}); upgrade fusionedge",
        )
    else:
        for key in sorted(set(obj) - set(HEADER_KEYS)):
            if not key.startswith("_"):
                reading.bad(
                    number, key, f"unknown header field; accepted: {', '.join(HEADER_KEYS)}"
                )
        allow = obj.get("allow_outside_paths", False)
        if isinstance(allow, bool):
            reading.allow_outside = allow
        else:
            reading.bad(
                number, "allow_outside_paths", f"expected true or false, got {brief(allow)}"
            )


def _parse_line(obj: dict, number: int, reading: _Reading) -> Record | None:
    def bad(field: str, message: str) -> None:
        reading.bad(number, field, message)

    problems = reading.problems
    before = len(problems)
    for key in sorted(set(obj) - set(KEYS)):
        if not key.startswith("_"):  # "_"-prefixed keys are the user's own notes
            bad(key, f"unknown field; accepted: {', '.join(KEYS)} (prefix your own with _)")
    sample_id = obj.get("id")
    if not isinstance(sample_id, str) or not sample_id.strip():
        bad("id", f"required, a non-empty string; got {brief(sample_id)}")
        sample_id = ""
    files: dict[str, Path | None] = {}
    for field_name in ("image", "audio"):
        files[field_name] = _parse_file(obj.get(field_name), field_name, reading, bad)
    text = obj.get("text")
    if text is not None and not isinstance(text, str):
        bad("text", f"expected a string, got {brief(text)}")
        text = None
    if isinstance(text, str) and not text.strip():
        text = None  # an empty hint is no hint: the model sees text as missing
    if (
        files["image"] is None
        and files["audio"] is None
        and text is None
        and len(problems) == before
    ):
        bad("", "a sample needs at least one of image, audio, text")
    label = _parse_label(obj.get("label"), "label" in obj, reading.require_labels, bad)
    group = obj.get("group")
    if group is not None and (not isinstance(group, str) or not group.strip()):
        bad(
            "group",
            f"expected a non-empty string naming the sample's speaker, session or "
            f"recording; got {brief(group)}",
        )
        group = None
    split = obj.get("split")
    if split is None:
        # Hashing the group keeps every sample of a speaker or session in one split, so
        # validation and test measure groups the model has not seen.
        key = group or sample_id
        split = split_for_id(key) if key else "train"
    elif split not in SPLITS:
        bad("split", f"expected one of {', '.join(SPLITS)}, got {brief(split)}")
    if len(problems) > before:
        return None
    return Record(
        id=sample_id,
        line=number,
        split=split,
        label=label,
        image=files["image"],
        audio=files["audio"],
        text=text,
        group=group,
    )


def group_overlap(seen: Iterable[Record], records: Iterable[Record]) -> dict[str, int]:
    """How many of the groups in `records` also occur in `seen` (the train split, say).

    Only lines with a group count: a data set without groups gives zeros throughout.

    Returns:
        n_groups: Distinct groups in records.
        n_samples: Records with a group.
        seen_in_train: Those groups that also occur in seen.
        samples_in_seen_groups: Records whose group occurs in seen.
    """
    seen_groups = {r.group for r in seen if r.group is not None}
    grouped = [r for r in records if r.group is not None]
    groups = {r.group for r in grouped}
    return {
        "n_groups": len(groups),
        "n_samples": len(grouped),
        "seen_in_train": len(groups & seen_groups),
        "samples_in_seen_groups": sum(r.group in seen_groups for r in grouped),
    }


def hold_out(records: list[Record], every: int = 10) -> tuple[list[Record], list[Record]]:
    """(train, val) for a data set without a val split: about 1 in `every` samples.

    With groups, whole groups are held out (in the order of their hash, skipping any that
    would take more than half the samples, until they cover an `every`-th), so validation
    measures new speakers or sessions; without groups, or with a single one, every
    `every`-th sample.
    """
    groups = sorted({r.group for r in records if r.group is not None}, key=_group_order)
    if len(groups) < 2:
        return [r for i, r in enumerate(records) if i % every], records[::every]
    sizes = Counter(r.group for r in records)
    held: set[str] = set()
    taken = 0
    for g in groups:
        if taken * every >= len(records):
            break
        if (taken + sizes[g]) * 2 <= len(records):
            held.add(g)
            taken += sizes[g]
    if not held:
        return [r for i, r in enumerate(records) if i % every], records[::every]
    return [r for r in records if r.group not in held], [r for r in records if r.group in held]


def _group_order(group: str) -> bytes:
    return hashlib.sha256(group.encode("utf-8")).digest()


def missing_classes(manifest: Manifest, train: Iterable[Record]) -> list[str]:
    """Class names of the data set that no training sample carries."""
    if manifest.label_kind not in ("class", "multilabel"):
        return []
    seen: set[str] = set()
    for r in train:
        if isinstance(r.label, str):
            seen.add(r.label)
        elif isinstance(r.label, tuple):
            seen.update(r.label)
    return [c for c in manifest.classes if c not in seen]


def _parse_file(value: object, field: str, reading: _Reading, bad) -> Path | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value or "\0" in value:
        bad(field, f"expected a file path relative to the manifest, got {brief(value)}")
        return None
    try:
        file = (reading.root / value).resolve()
    except (OSError, RuntimeError) as e:  # RuntimeError: pathlib's "Symlink loop"
        bad(field, f"cannot resolve {brief(value)}: {e}")
        return None
    if not reading.allow_outside and not file.is_relative_to(reading.root):
        bad(
            field,
            f"{brief(value)} resolves to {file}, outside the data set's folder "
            f"{reading.root}; {OPT_IN}",
        )
        return None
    try:
        found = not reading.check_files or file.is_file()
    except OSError as e:  # a name longer than the file system allows, say
        bad(field, f"cannot look up {brief(value)}: {e}")
        return None
    if not found:
        bad(field, f"file not found: {value} (looked for {file})")
        return None
    return file


def _parse_label(value: object, given: bool, required: bool, bad) -> Label | None:
    if not given or value is None:
        if required:
            bad("label", "required: a class name, a list of class names, or a number")
        return None
    if isinstance(value, str) and value:
        return value
    if isinstance(value, bool):
        pass  # a bool is a JSON literal, not a class or a number: reject below
    elif isinstance(value, int | float):
        number = _as_float(value)
        if math.isfinite(number):
            return number
        bad("label", f"a numeric label must be finite, got {brief(value)}")
        return None
    elif isinstance(value, list) and all(isinstance(v, str) and v for v in value):
        return tuple(sorted(set(value)))
    bad("label", f"expected a class name, a list of class names, or a number; got {brief(value)}")
    return None


def _as_float(value: int | float) -> float:
    """A JSON number as a float; an integer too large for one (10**400) becomes inf."""
    try:
        return float(value)
    except OverflowError:
        return math.inf


def _check_label_kinds(records: list[Record], path: Path, problems: list[Problem]) -> str:
    def kind(label: Label) -> str:
        return (
            "class"
            if isinstance(label, str)
            else "multilabel"
            if isinstance(label, tuple)
            else "number"
        )

    kinds = Counter(kind(r.label) for r in records if r.label is not None)
    if not kinds:
        return "none"
    majority = kinds.most_common(1)[0][0]
    for r in records:
        if r.label is not None and kind(r.label) != majority:
            problems.append(
                Problem(
                    path,
                    r.line,
                    "label",
                    f"a {kind(r.label)} label among {majority} labels; all lines must use one kind",
                )
            )
    return majority
