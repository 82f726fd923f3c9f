"""What each fault of a soak did: the results while it was in place, the input it took
away marked absent, the recovery after it, what the server sent and the FIFO writer
wrote, the stderr lines (per_fault_figures); and the same summed up per kind of fault
(figures_by_kind). Part of benchmarks/soak.py."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any

import numpy as np
from soak_faults import MODALITY, Fault
from soak_record import Raw
from soak_results import Results, StderrEvents
from soak_stats import fraction, median

STALE_S = 0.5  # `fusionedge run`'s default --stale-ms


def per_fault_figures(raw: Raw, results: Results, events: StderrEvents) -> list[dict[str, Any]]:
    """One row per fault that was applied (the process may have ended before the rest)."""
    starts = [f.start_s for f in raw.faults] + [raw.duration_s]
    return [
        _fault_figures(raw, f, next_start, results, events)
        for f, next_start in zip(raw.faults, starts[1:], strict=True)
        if f.applied_s is not None  # the process ended before this fault's time
    ]


def _fault_figures(
    raw: Raw, f: Fault, next_start: float, results: Results, events: StderrEvents
) -> dict[str, Any]:
    present = results.present(MODALITY[f.kind])
    # From when the fault was in place and when it was undone (a busy harness can be
    # late with either), by when the loop judged each result.
    on = f.applied_s
    off = f.undone_s if f.undone_s is not None else f.end_s
    inside = results.judged_between(on, off)
    settled = results.judged_between(on + STALE_S + 0.5, off)
    return {
        "kind": f.kind,
        "cycle": f.cycle,
        "start_s": f.start_s,
        "end_s": f.end_s,
        "applied_s": f.applied_s,
        "undone_s": f.undone_s,
        "results": int(inside.sum()),
        "rate_hz": inside.sum() / max(off - on, 1e-9),
        "image_present": fraction(results.image[inside]),
        "audio_present": fraction(results.audio[inside]),
        "absent_once_stale": fraction(~present[settled]),
        "recovery_s": _recovery(results, present, off, next_start),
        "preprocess_ms_p50": median(results.preprocess[inside]),
        "server": _server_sent(raw, f, next_start),
        "fifo_samples_during": f.at_end.get("fifo_samples", 0) - f.at_start.get("fifo_samples", 0),
        "stderr": events.counts_between(f.start_s, next_start),
    }


def _recovery(results: Results, present: np.ndarray, off: float, next_start: float) -> float:
    """The last result with the input absent between the fault's undoing and the next
    fault, less the undoing; inf if the input was not back by the next fault."""
    after = results.judged_between(off, next_start)
    absent_after = np.flatnonzero(after & ~present)
    if not after.any() or not present[after][-1]:
        return float("inf")  # not back by the next fault (or the end)
    if len(absent_after):
        return max(0.0, float(results.judged[absent_after[-1]]) - off)
    return 0.0


def _server_sent(raw: Raw, f: Fault, next_start: float) -> dict[str, int]:
    """The server's counters from the fault's start to the next fault's (reconnects come
    after the end), those that moved; the FIFO writer's samples are counted apart, during
    the fault itself."""
    later = next((g.at_start for g in raw.faults if g.start_s >= next_start), raw.final)
    sent = {
        k: later.get(k, 0) - f.at_start.get(k, 0)
        for k in set(later) | set(f.at_start)
        if k != "fifo_samples"
    }
    return {k: v for k, v in sorted(sent.items()) if v}


def figures_by_kind(per_fault: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per kind of fault: medians and extremes over its faults, counters summed."""
    out = {}
    for kind, group in itertools.groupby(
        sorted(per_fault, key=lambda f: f["kind"]), key=lambda f: f["kind"]
    ):
        group = list(group)
        rec = [f["recovery_s"] for f in group]
        absent = [f["absent_once_stale"] for f in group if f["absent_once_stale"] is not None]
        out[kind] = {
            "count": len(group),
            "rate_hz": median([f["rate_hz"] for f in group]),
            "image_present": median([f["image_present"] for f in group if f["results"]]),
            "audio_present": median([f["audio_present"] for f in group if f["results"]]),
            "absent_once_stale_min": min(absent) if absent else None,
            "recovery_s_median": median(rec),
            "recovery_s_max": max(rec),
            "preprocess_ms_p50": median(
                [f["preprocess_ms_p50"] for f in group if f["preprocess_ms_p50"] is not None]
            ),
            "fifo_samples_during_max": max(f["fifo_samples_during"] for f in group),
            "server": _summed(f["server"] for f in group),
            "stderr": _summed(f["stderr"] for f in group),
        }
    return out


def _summed(counters: Iterable[dict[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for counter in counters:
        for k, v in counter.items():
            out[k] = out.get(k, 0) + v
    return out
