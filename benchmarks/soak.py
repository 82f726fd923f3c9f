"""Soak: minutes of `fusionedge run` on a virtual camera and microphone, with faults.

    .venv/bin/python benchmarks/soak.py [--minutes 10] [--model MODEL.onnx] [--out soak.json]
        [--warmup-s 60] [--cycle minute|short] [--grace-s 1.0] [--raw raw.json]
    .venv/bin/python benchmarks/soak.py --reanalyse raw.json [--out soak.json]

The real console script runs headless (`fusionedge run MODEL --camera URL --mic pulse
--headless --providers cpu`, one JSON line per result) against the virtual devices of the
live tests (tests/live/live_helpers.py): an MJPEG-over-HTTP camera on 127.0.0.1 serving
pre-encoded textured 640x480 JPEGs at 30 fps (FaultyMjpegServer), and a private
PulseAudio daemon whose default source is a module-pipe-source fed a 440 Hz tone from a
FIFO (pulse_virtual_mic, FifoTone). Time 0 is the first line with both image and audio
present. The first --warmup-s are fault-free (the reference rate); then a cycle of faults
repeats until the end:

    minute cycle (60 s)          short cycle (48 s, the 60 s test)
    0 s   camera gone 5 s        0 s   camera gone 5 s     the HTTP server closes its
                                                           socket and every stream
    15 s  microphone stalled 3 s 9 s   stalled 3 s         the FIFO writer pauses
    25 s  corrupt JPEGs 1 s      16 s  corrupt 1 s         truncated, bit-flipped and
                                                           garbage JPEGs in turn
    35 s  4K frames 3 s          21 s  4K 3 s              3840x2160
    45 s  1280x720 frames 5 s    28 s  1280x720 4 s        then back to 640x480

Measured, from the JSON lines (stamped on arrival here; the per-fault figures place each
result at its turn's start on the run's own clock instead) and /proc/PID of the
`fusionedge run` process sampled every second:
- results per second outside the fault windows (each window runs from the fault's start
  to grace_s after its end), against the warm-up's fault-free rate (target >= 90 %);
  recovery after each fault (the last result with the modality absent before the next
  fault, less the moment the fault was undone; inf if the modality was not back by then)
  says where time outside the windows was lost;
- VmRSS: the median of each cycle's clean tail (from grace_s after its last fault to
  the next cycle: the same state at the same point of every cycle) and of the warm-up's
  second half; the growth from the first cycle's tail to the last one's (target <= 10 MB:
  a one-off allocation made by the first cycle's faults, e.g. the decoder's first 4K
  buffers, shows between warm-up and cycle 1 and is not read as a leak), the growth
  since warm-up, the peak, and a robust slope (Theil-Sen, MB/min) over every
  post-warm-up sample;
- Threads and open file descriptors (/proc/PID/fd), the same way (target: flat, no
  growth from the first cycle's tail to the last's);
- crashes: the process must be alive at the end, exit 0 on SIGINT (Ctrl+C) and print no
  traceback (target 0);
- evidence that each fault happened: what the server sent (frames by kind, connections),
  the modality marked absent in the results, warnings and decoder errors on stderr.

Prints a table and writes the JSON report to --out. Without --model a tiny image + audio
+ text model is trained and exported first with the SDK (tests/support.py's
train_and_export, as the live tests' live_model fixture does). tests/live/test_live_soak.py
runs run_soak() for 60 s with the short cycle in the default test run.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
# The virtual devices and `fusionedge run` in a subprocess are the live tests' own
# (tests/live/live_helpers.py), not a copy; tests/support.py trains the tiny model.
for _folder in (REPO / "tests" / "live", REPO / "tests"):
    if str(_folder) not in sys.path:
        sys.path.insert(0, str(_folder))

from live_helpers import (  # noqa: E402
    CORRUPT_KINDS,
    FaultyMjpegServer,
    FifoTone,
    LiveRun,
    VirtualMic,
    pulse_virtual_mic,
    wait_for,
)

VGA, HD, UHD = (640, 480), (1280, 720), (3840, 2160)
FPS = 30.0
TONE_HZ = 440.0
STALE_S = 0.5  # `fusionedge run`'s default --stale-ms
STARTUP_S = 60.0  # for the first result with image and audio
RATE_TARGET, RSS_TARGET_MB = 0.90, 10.0

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


def schedule(duration_s: float, warmup_s: float, cycle: str, grace_s: float) -> list[Fault]:
    """The faults of every cycle that fits, with its grace, between warm-up and the end."""
    faults_in_cycle, period = CYCLES[cycle]
    last_end = max(start + length for _, start, length in faults_in_cycle)
    faults, k = [], 0
    while warmup_s + k * period + last_end + grace_s <= duration_s:
        base = warmup_s + k * period
        faults += [Fault(kind, base + s, base + s + n, k) for kind, s, n in faults_in_cycle]
        k += 1
    return faults


# ---------------------------------------------------------------------- /proc sampling


class ProcSampler:
    """Every second: VmRSS, Threads, open fds and CPU time of a process, and the
    machine's load, on its own thread. `samples` rows have t (time.monotonic())."""

    def __init__(self, pid: int, period_s: float = 1.0) -> None:
        self.pid, self.period_s = pid, period_s
        self.samples: list[dict[str, float]] = []
        self.gone_at: float | None = None
        self._stop = threading.Event()
        self._tick = os.sysconf("SC_CLK_TCK")
        self._thread = threading.Thread(target=self._run, name="proc-sampler", daemon=True)

    def start(self) -> ProcSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _machine_busy(self) -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        return sum(fields) - idle, sum(fields)

    def sample(self) -> dict[str, float] | None:
        proc = Path(f"/proc/{self.pid}")
        try:
            status = (proc / "status").read_text()
            fds = len(os.listdir(proc / "fd"))
            stat = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            return None
        values = dict(re.findall(r"^(VmRSS|Threads):\s+(\d+)", status, re.M))
        if "VmRSS" not in values:  # a zombie: exited, not yet reaped
            return None
        busy, total = self._machine_busy()
        return {
            "t": time.monotonic(),
            "rss_mb": int(values["VmRSS"]) / 1024,
            "threads": int(values["Threads"]),
            "fds": fds,
            "cpu_s": (int(stat[11]) + int(stat[12])) / self._tick,  # utime + stime
            "load1": float(Path("/proc/loadavg").read_text().split()[0]),
            "machine_busy": busy,
            "machine_total": total,
        }

    def _run(self) -> None:
        start, k = time.monotonic(), 0
        while not self._stop.is_set():
            row = self.sample()
            if row is None:
                self.gone_at = time.monotonic()
                return
            self.samples.append(row)
            k += 1
            self._stop.wait(max(0.0, start + k * self.period_s - time.monotonic()))


# ---------------------------------------------------------------------- the run


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


def run_soak(
    model: Path,
    mic: VirtualMic,
    duration_s: float = 600.0,
    warmup_s: float = 60.0,
    cycle: str = "minute",
    grace_s: float = 1.0,
    progress: bool = False,
) -> dict[str, Any]:
    """Runs `fusionedge run` for duration_s (after its first complete result) with the
    faults of `cycle` after warmup_s; returns the report (see analyse)."""
    return analyse(collect(model, mic, duration_s, warmup_s, cycle, grace_s, progress))


def collect(
    model: Path,
    mic: VirtualMic,
    duration_s: float,
    warmup_s: float,
    cycle: str,
    grace_s: float,
    progress: bool = False,
) -> Raw:
    """The run itself: what run_soak analyses."""
    faults = schedule(duration_s, warmup_s, cycle, grace_s)
    server = FaultyMjpegServer(fps=FPS, size=VGA, sizes=(HD, UHD)).start()
    tone = FifoTone(mic.fifo, mic.rate, TONE_HZ)
    options = ("--providers", "cpu", "--duration", str(duration_s + 120))  # a safety net
    launched = time.monotonic()
    run = LiveRun(model, server.url, mic, *options)
    sampler = ProcSampler(run.pid).start()
    apply = {
        "camera_gone": (server.kill, server.start),
        "mic_stall": (tone.pause, tone.resume),
        "corrupt_jpeg": (
            lambda: setattr(server, "corrupt", True),
            lambda: setattr(server, "corrupt", False),
        ),
        "4k_burst": (lambda: setattr(server, "size", UHD), lambda: setattr(server, "size", VGA)),
        "size_change": (
            lambda: setattr(server, "size", HD),
            lambda: setattr(server, "size", VGA),
        ),
    }

    def snapshot() -> dict[str, int]:
        return {**server.counters(), "fifo_samples": tone.written}

    def wait_until(t: float) -> bool:
        """Sleeps until t; False as soon as the process has ended."""
        while (left := t - time.monotonic()) > 0:
            if run.proc.poll() is not None:
                return False
            time.sleep(min(left, 0.2))
        return run.proc.poll() is None

    try:
        with run:
            up = wait_for(run.both_present, STARTUP_S)
            if not up:
                raise RuntimeError(
                    f"no result with image and audio within {STARTUP_S:.0f} s "
                    f"(exit code {run.proc.poll()}):\n{run.stderr[-3000:]}"
                )
            t0 = time.monotonic()
            steps = sorted(
                [(f.start_s, 0, f) for f in faults] + [(f.end_s, 1, f) for f in faults],
                key=lambda s: (s[0], s[1]),
            )
            for t, undo, fault in steps:
                if not wait_until(t0 + t):
                    break
                if undo:
                    fault.at_end = snapshot()
                    apply[fault.kind][1]()
                    fault.undone_s = time.monotonic() - t0
                else:
                    fault.at_start = snapshot()
                    apply[fault.kind][0]()
                    fault.applied_s = time.monotonic() - t0
                    # The writer's count from when pause() returned (it waits for a block
                    # being written): a block begun before the pause is not "during".
                    fault.at_start["fifo_samples"] = tone.written
                    if progress:
                        print(f"  {fault.applied_s:6.1f} s  {fault.kind}", flush=True)
            wait_until(t0 + duration_s)
            final = snapshot()
            alive = run.proc.poll() is None
            try:
                code = run.wait(timeout=30, interrupt=alive)  # Ctrl+C, as a user stops it
            except subprocess.TimeoutExpired:  # a hang on exit: counted with the crashes
                code = None
    finally:
        sampler.stop()
        tone.close()
        server.kill()
    raw = Raw(
        t0=t0,
        duration_s=duration_s,
        warmup_s=warmup_s,
        grace_s=grace_s,
        cycle=cycle,
        faults=faults,
        lines=run.lines,
        err_lines=run.err_lines,
        samples=sampler.samples,
        final=final,
        alive_at_end=alive,
        exit_code=code,
        gone_at=sampler.gone_at,
        startup_s=t0 - launched,
        command=[str(x) for x in run.proc.args],
        niceness=os.nice(0),
        malloc_env={k: v for k, v in os.environ.items() if k.startswith("MALLOC_")},
    )
    return raw


# ---------------------------------------------------------------------- analysis


def _median(values: list[float] | np.ndarray) -> float | None:
    return float(np.median(values)) if len(values) else None


def theil_sen(t: np.ndarray, y: np.ndarray) -> float | None:
    """Median of the pairwise slopes (robust to a step and to outliers)."""
    if len(t) < 3:
        return None
    i, j = np.triu_indices(len(t), k=1)
    dt = t[j] - t[i]
    keep = dt > 0
    return float(np.median((y[j] - y[i])[keep] / dt[keep]))


def classify(line: str) -> str | None:
    if "Traceback" in line:
        return "traceback"
    if "fusionedge.runtime.camera" in line:
        return "camera_warning"
    if "fusionedge.runtime.audio" in line:
        return "audio_warning"
    if line.startswith("[mjpeg @") or "[mjpeg @" in line:
        return "decoder_error"
    if "Stream timeout triggered" in line:
        return "stream_timeout"
    return None


def analyse(raw: Raw) -> dict[str, Any]:
    t0 = raw.t0
    arrived = np.array([x["_arrived"] - t0 for x in raw.lines])
    # When the loop judged each result: its turn's start, on the run's own clock (both
    # processes read CLOCK_MONOTONIC; t + capture_to_result is the turn's end, "total" its
    # length). The per-fault figures are about what the loop decided once a fault was in
    # place; arrival here adds this process's own delays (a reader thread waiting for the
    # GIL, a busy machine), which can stamp a result judged while the input was still
    # fresh after the moment it should have been stale.
    judged = np.array(
        [
            x["t"] + (x["latency_ms"] - x["latency_breakdown_ms"]["total"]) / 1e3 - t0
            for x in raw.lines
        ]
    )
    image = np.array([bool(x["present"]["image"]) for x in raw.lines])
    audio = np.array([bool(x["present"]["audio"]) for x in raw.lines])
    present = {"image": image, "audio": audio}
    preprocess = np.array([x["latency_breakdown_ms"]["preprocess"] for x in raw.lines])
    faults = raw.faults
    windows = [(f.start_s, f.end_s + raw.grace_s) for f in faults]

    def between(lo: float, hi: float) -> np.ndarray:
        return (arrived >= lo) & (arrived < hi)

    def judged_between(lo: float, hi: float) -> np.ndarray:
        return (judged >= lo) & (judged < hi)

    def outside(t: np.ndarray) -> np.ndarray:
        mask = t >= raw.warmup_s
        for lo, hi in windows:
            mask &= ~((t >= lo) & (t < hi))
        return mask & (t < raw.duration_s)

    # -------------------------------------------------------------- results per second
    settle = min(5.0, raw.warmup_s / 4)
    base = between(settle, raw.warmup_s)
    base_s = raw.warmup_s - settle
    inside_s = sum(max(0.0, min(hi, raw.duration_s) - max(lo, raw.warmup_s)) for lo, hi in windows)
    outside_s = raw.duration_s - raw.warmup_s - inside_s
    out = outside(arrived)
    complete = image & audio
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
    rates["ratio"] = (
        rates["outside_faults_hz"] / rates["fault_free_hz"]
        if rates["fault_free_hz"] and rates["outside_faults_hz"] is not None
        else None
    )
    rates["complete_ratio"] = (
        rates["outside_faults_complete_hz"] / rates["fault_free_complete_hz"]
        if rates["fault_free_complete_hz"] and rates["outside_faults_complete_hz"] is not None
        else None
    )

    # -------------------------------------------------------------- stderr
    err = [(t - t0, kind, line) for t, line in raw.err_lines if (kind := classify(line))]
    err_t = np.array([e[0] for e in err])
    err_kind = np.array([e[1] for e in err])
    totals = {k: int((err_kind == k).sum()) for k in ("traceback", *_ERR_KINDS)}

    # -------------------------------------------------------------- each fault
    starts = [f.start_s for f in faults] + [raw.duration_s]
    per_fault = []
    for f, next_start in zip(faults, starts[1:], strict=True):
        if f.applied_s is None:  # the process ended before this fault's time
            continue
        modality = MODALITY[f.kind]
        # From when the fault was in place and when it was undone (a busy harness can be
        # late with either), by when the loop judged each result.
        on = f.applied_s
        off = f.undone_s if f.undone_s is not None else f.end_s
        inside = judged_between(on, off)
        settled = judged_between(on + STALE_S + 0.5, off)
        after = judged_between(off, next_start)
        absent_after = np.flatnonzero(after & ~present[modality])
        if not after.any() or not present[modality][after][-1]:
            recovery = float("inf")  # not back by the next fault (or the end)
        elif len(absent_after):
            recovery = max(0.0, float(judged[absent_after[-1]]) - off)
        else:
            recovery = 0.0
        # Server counters from the fault's start to the next fault's (reconnects come
        # after the end); the FIFO writer's samples during the fault itself.
        later = next((g.at_start for g in faults if g.start_s >= next_start), raw.final)
        sent = {
            k: later.get(k, 0) - f.at_start.get(k, 0)
            for k in set(later) | set(f.at_start)
            if k != "fifo_samples"
        }
        in_err = (err_t >= f.start_s) & (err_t < next_start) if len(err) else np.array([])
        per_fault.append(
            {
                "kind": f.kind,
                "cycle": f.cycle,
                "start_s": f.start_s,
                "end_s": f.end_s,
                "applied_s": f.applied_s,
                "undone_s": f.undone_s,
                "results": int(inside.sum()),
                "rate_hz": inside.sum() / max(off - on, 1e-9),
                "image_present": _frac(image[inside]),
                "audio_present": _frac(audio[inside]),
                "absent_once_stale": _frac(~present[modality][settled]),
                "recovery_s": recovery,
                "preprocess_ms_p50": _median(preprocess[inside]),
                "server": {k: v for k, v in sorted(sent.items()) if v},
                "fifo_samples_during": f.at_end.get("fifo_samples", 0)
                - f.at_start.get("fifo_samples", 0),
                "stderr": {k: int((err_kind[in_err] == k).sum()) for k in _ERR_KINDS if len(err)},
            }
        )

    # -------------------------------------------------------------- process over time
    samples = [{**s, "t": s["t"] - t0} for s in raw.samples]
    st = np.array([s["t"] for s in samples])
    per_phase = []
    values = {key: np.array([s[key] for s in samples]) for key in ("rss_mb", "threads", "fds")}
    for name, lo, hi, tail in _phases(raw):
        # A phase's figure is its median over the whole cycle: every cycle runs the same
        # schedule, so a cycle's median is comparable with any other's, and a one-off
        # allocation or a bounded sawtooth (memory taken by a fault and given back at a
        # later one) does not read as growth; a leak moves every cycle's median up.
        # The median of the clean tail (after the cycle's last fault) is kept too.
        sel = (st >= lo) & (st < hi)
        sel_tail = (st >= tail) & (st < hi)
        row = {"phase": name, "from_s": lo, "to_s": hi, "tail_from_s": tail}
        row["samples"] = int(sel.sum())
        for key, v in values.items():
            row[key] = _median(v[sel])
            row[f"{key}_tail"] = _median(v[sel_tail])
            row[f"{key}_max"] = float(v[sel].max()) if sel.any() else None
            row[f"{key}_min"] = float(v[sel].min()) if sel.any() else None
        per_phase.append(row)
    # Around each fault: RSS just before it, its highest until the next fault, and just
    # before the next fault (memory taken and given back).
    for f in per_fault:
        nxt = next((g["start_s"] for g in per_fault if g["start_s"] > f["start_s"]), None)
        hi = raw.duration_s if nxt is None else nxt
        before = values["rss_mb"][(st >= f["start_s"] - 3) & (st < f["start_s"])]
        during = values["rss_mb"][(st >= f["start_s"]) & (st < hi)]
        end = values["rss_mb"][(st >= hi - 3) & (st < hi)]
        f["rss_mb"] = {
            "before": _median(before),
            "max_until_next": float(during.max()) if len(during) else None,
            "before_next": _median(end),
        }
    post = st >= raw.warmup_s
    rss = np.array([s["rss_mb"] for s in samples])
    cycles = [p for p in per_phase if p["phase"] != "warm-up"]
    warm = per_phase[0]
    first, last = (cycles[0], cycles[-1]) if cycles else (warm, warm)
    # With one cycle there is no first-to-last growth: the targets then judge the growth
    # since warm-up, one-off allocations included (stricter).
    judged = "growth" if len(cycles) >= 2 else "growth_since_warmup"
    judged_mb = f"{judged}_mb"
    memory = {
        "warmup_mb": warm["rss_mb"],
        "first_cycle_mb": first["rss_mb"],
        "last_cycle_mb": last["rss_mb"],
        "growth_mb": _diff(last["rss_mb"], first["rss_mb"]),
        "growth_since_warmup_mb": _diff(last["rss_mb"], warm["rss_mb"]),
        "first_cycle_tail_mb": first["rss_mb_tail"],
        "last_cycle_tail_mb": last["rss_mb_tail"],
        "tail_growth_mb": _diff(last["rss_mb_tail"], first["rss_mb_tail"]),
        "judged": judged_mb,
        "slope_mb_per_min": _mul(theil_sen(st[post], rss[post]), 60.0),
        "peak_mb": float(rss.max()) if len(rss) else None,
    }
    counts = {
        key: {
            "warmup": warm[key],
            "first_cycle": first[key],
            "last_cycle": last[key],
            "growth": _diff(last[key], first[key]),
            "growth_since_warmup": _diff(last[key], warm[key]),
            "max": max((s[key] for s in samples), default=None),
            "min_after_warmup": min(
                (s[key] for s in samples if s["t"] >= raw.warmup_s), default=None
            ),
        }
        for key in ("threads", "fds")
    }
    cpu = _cpu(samples)

    # -------------------------------------------------------------- crashes
    crashes = {
        "alive_at_end": raw.alive_at_end,
        "exit_code": raw.exit_code,
        "tracebacks": totals["traceback"],
        "stderr_tail": "".join(line for _, line in raw.err_lines[-5:]),
    }
    crash_count = int(not raw.alive_at_end) + int(raw.exit_code != 0) + totals["traceback"]

    by_kind = _by_kind(per_fault)
    targets = {
        "rate_ratio_ge_0.9": rates["ratio"] is not None and rates["ratio"] >= RATE_TARGET,
        "rss_growth_le_10mb": memory[judged_mb] is not None and memory[judged_mb] <= RSS_TARGET_MB,
        "threads_flat": counts["threads"][judged] is not None and counts["threads"][judged] <= 0,
        "fds_flat": counts["fds"][judged] is not None and counts["fds"][judged] <= 0,
        "no_crashes": crash_count == 0,
    }
    return {
        "config": {
            "minutes": raw.duration_s / 60,
            "duration_s": raw.duration_s,
            "warmup_s": raw.warmup_s,
            "cycle": raw.cycle,
            "cycle_faults": [
                {"kind": k, "start_s": s, "length_s": n} for k, s, n in CYCLES[raw.cycle][0]
            ],
            "cycle_period_s": CYCLES[raw.cycle][1],
            "cycles": len({f.cycle for f in faults}),
            "grace_s": raw.grace_s,
            "camera": {"fps": FPS, "size": VGA, "hd": HD, "uhd": UHD},
            "command": raw.command,
            "argv": raw.argv,
            "startup_s": raw.startup_s,
        },
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "niceness": raw.niceness,
            "malloc_env": raw.malloc_env,
            "load1_mean": _median([s["load1"] for s in samples]),
            "load1_max": max((s["load1"] for s in samples), default=None),
            **cpu,
        },
        "rates": rates,
        "memory": memory,
        "counts": counts,
        "crashes": crashes,
        "crash_count": crash_count,
        "stderr_totals": totals,
        "targets": targets,
        "faults_by_kind": by_kind,
        "faults": per_fault,
        "phases": per_phase,
        "samples": samples,
    }


_ERR_KINDS = ("camera_warning", "audio_warning", "decoder_error", "stream_timeout")


def _frac(mask: np.ndarray) -> float | None:
    return float(mask.mean()) if len(mask) else None


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _mul(a: float | None, k: float) -> float | None:
    return None if a is None else a * k


def _phases(raw: Raw) -> list[tuple[str, float, float, float]]:
    """(name, from, to, clean tail from): the warm-up's second half, then one phase per
    cycle, to the next cycle's start or the end, whose tail starts grace_s after the
    cycle's last fault."""
    out = [("warm-up", raw.warmup_s / 2, raw.warmup_s, raw.warmup_s / 2)]
    faults, period = CYCLES[raw.cycle]
    last_end = max(start + length for _, start, length in faults)
    n = len({f.cycle for f in raw.faults})
    for k in range(n):
        lo = raw.warmup_s + k * period
        hi = raw.duration_s if k == n - 1 else lo + period
        out.append((f"cycle {k + 1}", lo, hi, lo + last_end + raw.grace_s))
    return out


def _cpu(samples: list[dict]) -> dict[str, float | None]:
    if len(samples) < 2:
        return {"process_cpu_percent": None, "machine_busy_percent": None}
    a, b = samples[0], samples[-1]
    busy = (b["machine_busy"] - a["machine_busy"]) / max(1, b["machine_total"] - a["machine_total"])
    return {
        "process_cpu_percent": 100 * (b["cpu_s"] - a["cpu_s"]) / (b["t"] - a["t"]),
        "machine_busy_percent": 100 * busy,  # of all cores, every process
    }


def _by_kind(per_fault: list[dict]) -> dict[str, dict]:
    out = {}
    for kind, group in itertools.groupby(
        sorted(per_fault, key=lambda f: f["kind"]), key=lambda f: f["kind"]
    ):
        group = list(group)
        server: dict[str, int] = {}
        stderr: dict[str, int] = {}
        for f in group:
            for k, v in f["server"].items():
                server[k] = server.get(k, 0) + v
            for k, v in f["stderr"].items():
                stderr[k] = stderr.get(k, 0) + v
        rec = [f["recovery_s"] for f in group]
        absent = [f["absent_once_stale"] for f in group if f["absent_once_stale"] is not None]
        out[kind] = {
            "count": len(group),
            "rate_hz": _median([f["rate_hz"] for f in group]),
            "image_present": _median([f["image_present"] for f in group if f["results"]]),
            "audio_present": _median([f["audio_present"] for f in group if f["results"]]),
            "absent_once_stale_min": min(absent) if absent else None,
            "recovery_s_median": _median(rec),
            "recovery_s_max": max(rec),
            "preprocess_ms_p50": _median(
                [f["preprocess_ms_p50"] for f in group if f["preprocess_ms_p50"] is not None]
            ),
            "fifo_samples_during_max": max(f["fifo_samples_during"] for f in group),
            "server": server,
            "stderr": stderr,
        }
    return out


# ---------------------------------------------------------------------- output


def _f(x: float | None, fmt: str = "{:.1f}") -> str:
    return "-" if x is None else fmt.format(x)


def format_table(report: dict[str, Any]) -> str:
    c, m, r = report["config"], report["machine"], report["rates"]
    mem, cnt, tg = report["memory"], report["counts"], report["targets"]
    ok = {True: "PASS", False: "MISS"}
    lines = [
        f"fusionedge run soak: {c['minutes']:.1f} min ({c['warmup_s']:.0f} s fault-free "
        f"warm-up, {c['cycles']} x {c['cycle']} cycle of {c['cycle_period_s']:.0f} s), "
        f"nice {m['niceness']}, load avg {_f(m['load1_mean'], '{:.2f}')} "
        f"(max {_f(m['load1_max'], '{:.2f}')}), "
        f"machine busy {_f(m['machine_busy_percent'], '{:.0f}')} % of {m['cpus']} cores, "
        f"fusionedge run {_f(m['process_cpu_percent'], '{:.0f}')} % of one core",
        "",
        "| measure | figure | target | |",
        "| --- | --- | --- | --- |",
        f"| results/s outside fault windows vs fault-free | {_f(r['outside_faults_hz'])} vs "
        f"{_f(r['fault_free_hz'])} (**{_f(_mul(r['ratio'], 100), '{:.1f}')} %**); with image "
        f"and audio {_f(r['outside_faults_complete_hz'])} vs {_f(r['fault_free_complete_hz'])} "
        f"({_f(_mul(r['complete_ratio'], 100), '{:.1f}')} %) | >= 90 % | "
        f"{ok[tg['rate_ratio_ge_0.9']]} |",
        f"| RSS, median of the first -> last cycle | {_f(mem['first_cycle_mb'])} -> "
        f"{_f(mem['last_cycle_mb'])} MB ({_b(mem, 'growth_mb')} MB), since warm-up "
        f"{_b(mem, 'growth_since_warmup_mb')} MB; robust slope "
        f"{_f(mem['slope_mb_per_min'], '{:+.2f}')} MB/min; warm-up "
        f"{_f(mem['warmup_mb'])} MB, peak {_f(mem['peak_mb'])} MB; clean tail of the first "
        f"-> last cycle {_f(mem['first_cycle_tail_mb'])} -> {_f(mem['last_cycle_tail_mb'])} "
        f"MB | <= 10 MB | {ok[tg['rss_growth_le_10mb']]} |",
    ]
    for key, name in (("threads", "threads"), ("fds", "open fds")):
        k = {**cnt[key], "judged": mem["judged"].removesuffix("_mb")}
        lines.append(
            f"| {name}, median of warm-up / first / last cycle | {_f(k['warmup'], '{:.0f}')} / "
            f"{_f(k['first_cycle'], '{:.0f}')} / {_f(k['last_cycle'], '{:.0f}')} (growth "
            f"{_b(k, 'growth')}, since warm-up {_b(k, 'growth_since_warmup')}); range "
            f"{_f(k['min_after_warmup'], '{:.0f}')}-{_f(k['max'], '{:.0f}')} | flat | "
            f"{ok[tg[f'{key}_flat']]} |"
        )
    cr = report["crashes"]
    lines.append(
        f"| crashes | alive at end: {cr['alive_at_end']}, exit code {cr['exit_code']} on "
        f"SIGINT, {cr['tracebacks']} tracebacks | 0 | {ok[tg['no_crashes']]} |"
    )
    lines += [
        "",
        "| fault | times | results/s during | image / audio present during | recovery "
        "median / max | evidence |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for kind, k in report["faults_by_kind"].items():
        lines.append(
            f"| {kind} | {k['count']} | {_f(k['rate_hz'])} | "
            f"{_f(_mul(k['image_present'], 100), '{:.0f}')} / "
            f"{_f(_mul(k['audio_present'], 100), '{:.0f}')} % | "
            f"{_f(k['recovery_s_median'], '{:.2f}')} / {_f(k['recovery_s_max'], '{:.2f}')} s | "
            f"{_evidence(kind, k)} |"
        )
    return "\n".join(lines)


def _b(figures: dict, key: str) -> str:
    """A growth, in bold where it is the one the target judges."""
    text = _f(figures[key], "{:+.1f}" if key.endswith("mb") else "{:+.0f}")
    return f"**{text}**" if figures.get("judged") == key else text


def _evidence(kind: str, k: dict) -> str:
    server, err = k["server"], k["stderr"]
    if kind == "camera_gone":
        return (
            f"image absent in {_f(_mul(k['absent_once_stale_min'], 100), '{:.0f}')} %+ once "
            f"stale; {server.get('connections', 0)} reconnections; "
            f"{err.get('camera_warning', 0)} camera warnings"
        )
    if kind == "mic_stall":
        return (
            f"audio absent in {_f(_mul(k['absent_once_stale_min'], 100), '{:.0f}')} %+ once "
            f"stale; FIFO samples written during <= {k['fifo_samples_during_max']}; "
            f"{err.get('audio_warning', 0)} audio warnings"
        )
    if kind == "corrupt_jpeg":
        sent = ", ".join(f"{server.get(c, 0)} {c}" for c in CORRUPT_KINDS)
        return (
            f"sent {sent}; {err.get('decoder_error', 0)} decoder errors, "
            f"{err.get('camera_warning', 0)} camera warnings, "
            f"{server.get('connections', 0)} reconnections"
        )
    size = "x".join(map(str, UHD if kind == "4k_burst" else HD))
    return (
        f"sent {server.get(size, 0)} {size} frames; preprocess p50 "
        f"{_f(k['preprocess_ms_p50'], '{:.2f}')} ms; {server.get('connections', 0)} "
        f"reconnections"
    )


# ---------------------------------------------------------------------- main


def train_tiny_model(root: Path) -> Path:
    """The live tests' tiny model (tests/support.py), trained and exported under root."""
    from support import train_and_export, write_dataset

    return train_and_export(write_dataset(root / "data"), root / "model")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="length (default 10)")
    parser.add_argument("--model", type=Path, help="a .onnx model (default: train a tiny one)")
    parser.add_argument("--out", type=Path, help="write the JSON report here")
    parser.add_argument("--warmup-s", type=float, default=60.0, help="fault-free start")
    parser.add_argument("--cycle", choices=sorted(CYCLES), default="minute")
    parser.add_argument("--grace-s", type=float, default=1.0, help="after each fault's end")
    parser.add_argument("--raw", type=Path, help="also save what was recorded (JSON)")
    parser.add_argument("--reanalyse", type=Path, help="analyse a --raw file; run nothing")
    args = parser.parse_args(argv)
    duration = args.minutes * 60
    if args.reanalyse:
        raw = load_raw(args.reanalyse)
    elif not schedule(duration, args.warmup_s, args.cycle, args.grace_s):
        parser.error("no fault cycle fits: give more --minutes or less --warmup-s")
    else:
        with tempfile.TemporaryDirectory(prefix="fe-soak-") as tmp:
            model = args.model
            if model is None:
                print("training a tiny model (tests/support.py train_and_export)", flush=True)
                model = train_tiny_model(Path(tmp))
            with pulse_virtual_mic(16000) as mic:
                print(f"soak: {args.minutes:g} min of fusionedge run on {model}", flush=True)
                raw = collect(
                    model, mic, duration, args.warmup_s, args.cycle, args.grace_s, progress=True
                )
        raw.argv = list(sys.argv)
        if args.raw:
            args.raw.write_text(json.dumps(asdict(raw), default=_json_default))
    report = analyse(raw)
    report["config"]["model"] = str(args.model) if args.model else "tiny (tests/support.py)"
    if args.out:
        args.out.write_text(json.dumps(report, indent=1, default=_json_default))
    print(format_table(report))
    return 0 if all(report["targets"].values()) else 1


def load_raw(path: Path) -> Raw:
    data = json.loads(path.read_text())
    data["faults"] = [Fault(**f) for f in data["faults"]]
    data["err_lines"] = [tuple(e) for e in data["err_lines"]]
    return Raw(**data)


def _json_default(x: object) -> object:
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, Fault):
        return asdict(x)
    raise TypeError(type(x).__name__)


if __name__ == "__main__":
    sys.exit(main())
