"""The `fusionedge run` process over a soak, from its /proc samples: medians per phase
(the warm-up's second half, each cycle), RSS around each fault, the memory, thread and
fd figures the targets judge, and CPU use. Part of benchmarks/soak.py."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from soak_faults import CYCLES, last_fault_end
from soak_record import Raw
from soak_stats import difference, median, scaled, theil_sen

COUNTED = ("rss_mb", "threads", "fds")


@dataclass
class Samples:
    """The /proc samples with t in s from time 0: the rows, and the counted columns and
    t as arrays."""

    rows: list[dict[str, float]]
    t: np.ndarray
    columns: dict[str, np.ndarray]

    @classmethod
    def from_raw(cls, raw: Raw) -> Samples:
        rows = [{**s, "t": s["t"] - raw.t0} for s in raw.samples]
        t = np.array([s["t"] for s in rows])
        return cls(rows, t, {key: np.array([s[key] for s in rows]) for key in COUNTED})


def phases(raw: Raw) -> list[tuple[str, float, float, float]]:
    """(name, from, to, clean tail from): the warm-up's second half, then one phase per
    cycle, to the next cycle's start or the end, whose tail starts grace_s after the
    cycle's last fault."""
    out = [("warm-up", raw.warmup_s / 2, raw.warmup_s, raw.warmup_s / 2)]
    _, period = CYCLES[raw.cycle]
    last_end = last_fault_end(raw.cycle)
    n = len({f.cycle for f in raw.faults})
    for k in range(n):
        lo = raw.warmup_s + k * period
        hi = raw.duration_s if k == n - 1 else lo + period
        out.append((f"cycle {k + 1}", lo, hi, lo + last_end + raw.grace_s))
    return out


def phase_figures(raw: Raw, samples: Samples) -> list[dict[str, Any]]:
    """Per phase: median, max and min of each counted column, and the clean tail's median.

    A phase's figure is its median over the whole cycle: every cycle runs the same
    schedule, so a cycle's median is comparable with any other's, and a one-off
    allocation or a bounded sawtooth (memory taken by a fault and given back at a later
    one) does not read as growth; a leak moves every cycle's median up. The median of the
    clean tail (after the cycle's last fault) is kept too."""
    st = samples.t
    per_phase = []
    for name, lo, hi, tail in phases(raw):
        sel = (st >= lo) & (st < hi)
        sel_tail = (st >= tail) & (st < hi)
        row = {"phase": name, "from_s": lo, "to_s": hi, "tail_from_s": tail}
        row["samples"] = int(sel.sum())
        for key, v in samples.columns.items():
            row[key] = median(v[sel])
            row[f"{key}_tail"] = median(v[sel_tail])
            row[f"{key}_max"] = float(v[sel].max()) if sel.any() else None
            row[f"{key}_min"] = float(v[sel].min()) if sel.any() else None
        per_phase.append(row)
    return per_phase


def add_rss_around_faults(
    per_fault: list[dict[str, Any]], samples: Samples, duration_s: float
) -> None:
    """Adds "rss_mb" to each fault's row: RSS just before it, its highest until the next
    fault, and just before the next fault (memory taken and given back)."""
    st, rss = samples.t, samples.columns["rss_mb"]
    for f in per_fault:
        nxt = next((g["start_s"] for g in per_fault if g["start_s"] > f["start_s"]), None)
        hi = duration_s if nxt is None else nxt
        before = rss[(st >= f["start_s"] - 3) & (st < f["start_s"])]
        during = rss[(st >= f["start_s"]) & (st < hi)]
        end = rss[(st >= hi - 3) & (st < hi)]
        f["rss_mb"] = {
            "before": median(before),
            "max_until_next": float(during.max()) if len(during) else None,
            "before_next": median(end),
        }


def _compared(
    per_phase: list[dict[str, Any]],
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], str]:
    """The warm-up, first and last cycle's phases, and the growth the targets judge. With
    one cycle there is no first-to-last growth: the targets then judge the growth since
    warm-up, one-off allocations included (stricter)."""
    cycles = [p for p in per_phase if p["phase"] != "warm-up"]
    warm = per_phase[0]
    first, last = (cycles[0], cycles[-1]) if cycles else (warm, warm)
    judged = "growth" if len(cycles) >= 2 else "growth_since_warmup"
    return warm, first, last, judged


def memory_figures(raw: Raw, per_phase: list[dict[str, Any]], samples: Samples) -> dict[str, Any]:
    """RSS: the phases' medians and growths, the robust slope after the warm-up, the
    peak; "judged" names the growth the target judges."""
    warm, first, last, judged = _compared(per_phase)
    st, rss = samples.t, samples.columns["rss_mb"]
    post = st >= raw.warmup_s
    return {
        "warmup_mb": warm["rss_mb"],
        "first_cycle_mb": first["rss_mb"],
        "last_cycle_mb": last["rss_mb"],
        "growth_mb": difference(last["rss_mb"], first["rss_mb"]),
        "growth_since_warmup_mb": difference(last["rss_mb"], warm["rss_mb"]),
        "first_cycle_tail_mb": first["rss_mb_tail"],
        "last_cycle_tail_mb": last["rss_mb_tail"],
        "tail_growth_mb": difference(last["rss_mb_tail"], first["rss_mb_tail"]),
        "judged": f"{judged}_mb",
        "slope_mb_per_min": scaled(theil_sen(st[post], rss[post]), 60.0),
        "peak_mb": float(rss.max()) if len(rss) else None,
    }


def count_figures(
    raw: Raw, per_phase: list[dict[str, Any]], samples: Samples
) -> dict[str, dict[str, Any]]:
    """Threads and open fds: the phases' medians and growths, and their range."""
    warm, first, last, _ = _compared(per_phase)
    return {
        key: {
            "warmup": warm[key],
            "first_cycle": first[key],
            "last_cycle": last[key],
            "growth": difference(last[key], first[key]),
            "growth_since_warmup": difference(last[key], warm[key]),
            "max": max((s[key] for s in samples.rows), default=None),
            "min_after_warmup": min(
                (s[key] for s in samples.rows if s["t"] >= raw.warmup_s), default=None
            ),
        }
        for key in ("threads", "fds")
    }


def cpu_figures(samples: Samples) -> dict[str, float | None]:
    """CPU use from the first sample to the last: the process's, and the machine's."""
    if len(samples.rows) < 2:
        return {"process_cpu_percent": None, "machine_busy_percent": None}
    a, b = samples.rows[0], samples.rows[-1]
    busy = (b["machine_busy"] - a["machine_busy"]) / max(1, b["machine_total"] - a["machine_total"])
    return {
        "process_cpu_percent": 100 * (b["cpu_s"] - a["cpu_s"]) / (b["t"] - a["t"]),
        "machine_busy_percent": 100 * busy,  # of all cores, every process
    }
