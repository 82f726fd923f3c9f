"""The soak's fault schedule: what the virtual camera and microphone serve, the faults of
each cycle (when, how long, which input of the results they take away) and the faults of
a whole run (schedule). Part of benchmarks/soak.py, whose docstring tells the cycles."""

from __future__ import annotations

from dataclasses import dataclass, field

# What the virtual devices serve when no fault is in place, and the sizes the size
# faults switch to.
VGA, HD, UHD = (640, 480), (1280, 720), (3840, 2160)
FPS = 30.0
TONE_HZ = 440.0

# (kind, start, length) in seconds from the start of a cycle; the cycle's period.
CYCLES: dict[str, tuple[tuple[tuple[str, float, float], ...], float]] = {
    "minute": (
        (
            ("camera_gone", 0.0, 5.0),
            ("mic_stall", 15.0, 3.0),
            ("corrupt_jpeg", 25.0, 1.0),
            ("4k_burst", 35.0, 3.0),
            ("size_change", 45.0, 5.0),
        ),
        60.0,
    ),
    "short": (
        (
            ("camera_gone", 0.0, 5.0),
            ("mic_stall", 9.0, 3.0),
            ("corrupt_jpeg", 16.0, 1.0),
            ("4k_burst", 21.0, 3.0),
            ("size_change", 28.0, 4.0),
        ),
        48.0,
    ),
}
# Which input of the results each fault takes away.
MODALITY = {
    "camera_gone": "image",
    "mic_stall": "audio",
    "corrupt_jpeg": "image",
    "4k_burst": "image",
    "size_change": "image",
}


@dataclass
class Fault:
    kind: str
    start_s: float  # planned, from time 0
    end_s: float
    cycle: int
    # Filled in as it runs: when it was applied and undone (s from time 0), and snapshots
    # of the server's counters and of the FIFO writer at both moments.
    applied_s: float | None = None
    undone_s: float | None = None
    at_start: dict[str, int] = field(default_factory=dict)
    at_end: dict[str, int] = field(default_factory=dict)


def last_fault_end(cycle: str) -> float:
    """When the cycle's last fault ends, in s from the cycle's start."""
    faults_in_cycle, _ = CYCLES[cycle]
    return max(start + length for _, start, length in faults_in_cycle)


def schedule(duration_s: float, warmup_s: float, cycle: str, grace_s: float) -> list[Fault]:
    """The faults of every cycle that fits, with its grace, between warm-up and the end."""
    faults_in_cycle, period = CYCLES[cycle]
    last_end = last_fault_end(cycle)
    faults, k = [], 0
    while warmup_s + k * period + last_end + grace_s <= duration_s:
        base = warmup_s + k * period
        faults += [Fault(kind, base + s, base + s + n, k) for kind, s, n in faults_in_cycle]
        k += 1
    return faults
