"""What a `fusionedge predict --data` run still has to do: its shard of the data set
(--shard I/N, by a hash of each id), less the ids its output file already holds (resume).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Shard:
    """Shard `index` of `count` (0 <= index < count)."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(
                f"--shard I/N needs N >= 1 and 0 <= I < N (shards are numbered from 0), "
                f"got {self.index}/{self.count}"
            )

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def has(self, sample_id: str) -> bool:
        return shard_of(sample_id, self.count) == self.index


def parse_shard(text: str) -> Shard:
    """ "I/N" -> Shard(I, N); a clear ValueError for anything else."""
    parts = text.strip().split("/")
    try:
        if len(parts) != 2:
            raise ValueError
        index, count = int(parts[0]), int(parts[1])
    except ValueError:
        raise ValueError(
            f"--shard expects I/N, two whole numbers such as 0/4 (the first of four "
            f"shards), got {text!r}"
        ) from None
    return Shard(index, count)


def shard_of(sample_id: str, count: int) -> int:
    """The shard of a sample: sha256 of its id (UTF-8), first 8 bytes big-endian, mod
    count. Stable across processes, machines and Python versions (unlike hash()), and
    independent of the order or presence of other samples."""
    digest = hashlib.sha256(sample_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % count


@dataclass
class Done:
    """What the output file already holds: ids, and (classification) their outcomes."""

    ids: set[str] = field(default_factory=set)
    outcome: dict[str, bool] = field(default_factory=dict)  # id -> label == true_label
    dropped_partial_line: bool = False


def read_done(out: Path) -> Done:
    """Reads the ids of an existing output file, line by line, and cuts off a last line
    without its newline (a run killed mid-write) so that appending starts on a fresh line.

    Raises:
        ValueError: a complete line that is not a JSON object with a string "id" (the
            file is not fusionedge's output; nothing is changed).
    """
    done = Done()
    if not out.exists():
        return done
    keep = 0  # bytes of complete lines
    with out.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            if not raw.endswith(b"\n"):
                done.dropped_partial_line = True
                break
            keep += len(raw)
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except (ValueError, RecursionError):
                obj = None
            if not isinstance(obj, dict) or not isinstance(obj.get("id"), str):
                raise ValueError(
                    f"{out}:{number}: not a line of `fusionedge predict --data` output "
                    "(a JSON object with an id); give another --out, or remove the file"
                )
            done.ids.add(obj["id"])
            if "error" not in obj and isinstance(obj.get("true_label"), str):
                done.outcome[obj["id"]] = obj.get("label") == obj["true_label"]
    if done.dropped_partial_line:
        with out.open("r+b") as f:
            f.truncate(keep)
        log.warning("%s: cut off a last line left unfinished by an earlier run", out)
    return done
