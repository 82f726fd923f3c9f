"""What `fusionedge run` said during a soak, as arrays: its result lines (Results), its
stderr lines of note (StderrEvents, see classify), and the results-per-second figures
against the fault-free rate (result_rates). Part of benchmarks/soak.py."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from soak_record import Raw

# stderr's kinds of line counted per fault (tracebacks are counted for the whole run).
LIBJPEG_ERRORS = ("Corrupt JPEG data", "Premature end of JPEG", "Invalid JPEG", "Not a JPEG")
ERR_KINDS = ("camera_warning", "audio_warning", "decoder_error", "stream_timeout")


@dataclass
class Results:
    """The result lines as arrays, one entry per result, times in s from time 0."""

    arrived: np.ndarray  # stamped on arrival here
    judged: np.ndarray  # the turn's start on the run's own clock (see from_lines)
    image: np.ndarray  # the image present (bool)
    audio: np.ndarray  # the audio present (bool)
    preprocess: np.ndarray  # ms

    @classmethod
    def from_lines(cls, lines: list[dict], t0: float) -> Results:
        arrived = np.array([x["_arrived"] - t0 for x in lines])
        # When the loop judged each result: its turn's start, on the run's own clock (both
        # processes read CLOCK_MONOTONIC; t + capture_to_result is the turn's end, "total"
        # its length). The per-fault figures are about what the loop decided once a fault
        # was in place; arrival here adds this process's own delays (a reader thread
        # waiting for the GIL, a busy machine), which can stamp a result judged while the
        # input was still fresh after the moment it should have been stale.
        judged = np.array(
            [
                x["t"] + (x["latency_ms"] - x["latency_breakdown_ms"]["total"]) / 1e3 - t0
                for x in lines
            ]
        )
        image = np.array([bool(x["present"]["image"]) for x in lines])
        audio = np.array([bool(x["present"]["audio"]) for x in lines])
        preprocess = np.array([x["latency_breakdown_ms"]["preprocess"] for x in lines])
        return cls(arrived, judged, image, audio, preprocess)

    def present(self, modality: str) -> np.ndarray:
        return {"image": self.image, "audio": self.audio}[modality]

    def arrived_between(self, lo: float, hi: float) -> np.ndarray:
        return (self.arrived >= lo) & (self.arrived < hi)

    def judged_between(self, lo: float, hi: float) -> np.ndarray:
        return (self.judged >= lo) & (self.judged < hi)


def classify(line: str) -> str | None:
    if "Traceback" in line:
        return "traceback"
    if "fusionedge.runtime.camera" in line:
        return "camera_warning"
    if "fusionedge.runtime.audio" in line:
        return "audio_warning"
    if "[mjpeg @" in line or line.startswith(LIBJPEG_ERRORS):
        return "decoder_error"  # FFmpeg's decoder, or libjpeg's (runtime/mjpeg.py)
    if "Stream timeout triggered" in line:
        return "stream_timeout"
    return None


@dataclass
class StderrEvents:
    """stderr's lines of note: when (s from time 0) and their kind (see classify)."""

    t: np.ndarray
    kind: np.ndarray

    @classmethod
    def from_raw(cls, raw: Raw) -> StderrEvents:
        err = [(t - raw.t0, kind) for t, line in raw.err_lines if (kind := classify(line))]
        return cls(np.array([e[0] for e in err]), np.array([e[1] for e in err]))

    def totals(self) -> dict[str, int]:
        return {k: int((self.kind == k).sum()) for k in ("traceback", *ERR_KINDS)}

    def counts_between(self, lo: float, hi: float) -> dict[str, int]:
        """Of each of ERR_KINDS, from lo to hi; {} when stderr had none of note at all."""
        if not len(self.t):
            return {}
        between = (self.t >= lo) & (self.t < hi)
        return {k: int((self.kind[between] == k).sum()) for k in ERR_KINDS}


def fault_windows(raw: Raw) -> list[tuple[float, float]]:
    """Each fault's window: from its start to grace_s after its end."""
    return [(f.start_s, f.end_s + raw.grace_s) for f in raw.faults]


def result_rates(raw: Raw, results: Results) -> dict[str, Any]:
    """Results per second (all, and with image and audio) in the warm-up after it settled
    (the fault-free reference) and outside the fault windows after the warm-up; their
    ratios are what the rate target judges."""
    windows = fault_windows(raw)
    settle = min(5.0, raw.warmup_s / 4)
    base = results.arrived_between(settle, raw.warmup_s)
    base_s = raw.warmup_s - settle
    inside_s = sum(max(0.0, min(hi, raw.duration_s) - max(lo, raw.warmup_s)) for lo, hi in windows)
    outside_s = raw.duration_s - raw.warmup_s - inside_s
    out = _outside(results.arrived, raw, windows)
    complete = results.image & results.audio
    rates = {
        "fault_free_hz": base.sum() / base_s,
        "fault_free_complete_hz": (base & complete).sum() / base_s,
        "outside_faults_hz": out.sum() / outside_s if outside_s > 0 else None,
        "outside_faults_complete_hz": (out & complete).sum() / outside_s if outside_s else None,
        "fault_free_s": base_s,
        "outside_faults_s": outside_s,
        "results": len(raw.lines),
        "dropped_frames": raw.lines[-1]["dropped_frames"] if raw.lines else None,
        "overflows": raw.lines[-1]["overflows"] if raw.lines else None,
    }
    rates["ratio"] = _ratio(rates["outside_faults_hz"], rates["fault_free_hz"])
    rates["complete_ratio"] = _ratio(
        rates["outside_faults_complete_hz"], rates["fault_free_complete_hz"]
    )
    return rates


def _outside(t: np.ndarray, raw: Raw, windows: list[tuple[float, float]]) -> np.ndarray:
    """After the warm-up, before the end and in none of the fault windows."""
    mask = t >= raw.warmup_s
    for lo, hi in windows:
        mask &= ~((t >= lo) & (t < hi))
    return mask & (t < raw.duration_s)


def _ratio(rate: float | None, reference: float | None) -> float | None:
    return rate / reference if reference and rate is not None else None
