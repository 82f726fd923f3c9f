"""What one soak records before analysis (Raw), and its JSON file: soak.py's --raw writes
one, --reanalyse reads it back. Part of benchmarks/soak.py."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from soak_faults import Fault


@dataclass
class Raw:
    """What one soak recorded, before analysis (times from time.monotonic())."""

    t0: float
    duration_s: float
    warmup_s: float
    grace_s: float
    cycle: str
    faults: list[Fault]
    lines: list[dict]
    err_lines: list[tuple[float, str]]
    samples: list[dict[str, float]]
    final: dict[str, int]  # the server's counters at the end
    alive_at_end: bool
    exit_code: int | None
    gone_at: float | None
    startup_s: float
    command: list[str]
    argv: list[str] = field(default_factory=list)  # soak.py's own, when run as a script
    niceness: int | None = None  # of this process (and so of `fusionedge run`)
    malloc_env: dict[str, str] = field(default_factory=dict)  # MALLOC_* given to the run


def save_raw(raw: Raw, path: Path) -> None:
    path.write_text(json.dumps(asdict(raw), default=json_default))


def load_raw(path: Path) -> Raw:
    data = json.loads(path.read_text())
    data["faults"] = [Fault(**f) for f in data["faults"]]
    data["err_lines"] = [tuple(e) for e in data["err_lines"]]
    return Raw(**data)


def json_default(x: object) -> object:
    """For json.dumps: the NumPy scalars and Faults in a Raw or in a report."""
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, Fault):
        return asdict(x)
    raise TypeError(type(x).__name__)
