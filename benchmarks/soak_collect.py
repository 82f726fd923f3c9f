"""The soak's run itself (collect): `fusionedge run` on the virtual camera and microphone,
the faults applied and undone on schedule, /proc sampled, everything kept in a Raw. Part
of benchmarks/soak.py; live_helpers is importable because soak.py put tests/live on
sys.path."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from live_helpers import FaultyMjpegServer, FifoTone, LiveRun, VirtualMic, wait_for
from soak_faults import FPS, HD, TONE_HZ, UHD, VGA, Fault, schedule
from soak_record import Raw
from soak_sampler import ProcSampler

STARTUP_S = 60.0  # for the first result with image and audio


class _Devices:
    """The virtual camera and microphone, and what each fault does to them."""

    def __init__(self, server: FaultyMjpegServer, tone: FifoTone) -> None:
        self.server, self.tone = server, tone
        # kind: (apply, undo)
        self.actions: dict[str, tuple[Callable[[], object], Callable[[], object]]] = {
            "camera_gone": (server.kill, server.start),
            "mic_stall": (tone.pause, tone.resume),
            "corrupt_jpeg": (
                lambda: setattr(server, "corrupt", True),
                lambda: setattr(server, "corrupt", False),
            ),
            "4k_burst": (
                lambda: setattr(server, "size", UHD),
                lambda: setattr(server, "size", VGA),
            ),
            "size_change": (
                lambda: setattr(server, "size", HD),
                lambda: setattr(server, "size", VGA),
            ),
        }

    def snapshot(self) -> dict[str, int]:
        """The server's counters and the FIFO writer's samples so far."""
        return {**self.server.counters(), "fifo_samples": self.tone.written}


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
    devices = _Devices(server, tone)
    options = ("--providers", "cpu", "--duration", str(duration_s + 120))  # a safety net
    launched = time.monotonic()
    run = LiveRun(model, server.url, mic, *options)
    sampler = ProcSampler(run.pid).start()
    try:
        with run:
            _wait_for_first_result(run)
            t0 = time.monotonic()
            _play_faults(run, devices, faults, t0, progress)
            _wait_until(run, t0 + duration_s)
            final = devices.snapshot()
            alive = run.proc.poll() is None
            code = _stop(run, alive)
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


def _wait_for_first_result(run: LiveRun) -> None:
    """Waits for time 0, the first result with image and audio present."""
    up = wait_for(run.both_present, STARTUP_S)
    if not up:
        raise RuntimeError(
            f"no result with image and audio within {STARTUP_S:.0f} s "
            f"(exit code {run.proc.poll()}):\n{run.stderr[-3000:]}"
        )


def _wait_until(run: LiveRun, t: float) -> bool:
    """Sleeps until t; False as soon as the process has ended."""
    while (left := t - time.monotonic()) > 0:
        if run.proc.poll() is not None:
            return False
        time.sleep(min(left, 0.2))
    return run.proc.poll() is None


def _play_faults(
    run: LiveRun, devices: _Devices, faults: list[Fault], t0: float, progress: bool
) -> None:
    """Applies and undoes each fault at its time from t0, stamping it as it goes; stops
    when the process ends."""
    steps = sorted(
        [(f.start_s, 0, f) for f in faults] + [(f.end_s, 1, f) for f in faults],
        key=lambda s: (s[0], s[1]),
    )
    for t, undo, fault in steps:
        if not _wait_until(run, t0 + t):
            break
        if undo:
            fault.at_end = devices.snapshot()
            devices.actions[fault.kind][1]()
            fault.undone_s = time.monotonic() - t0
        else:
            fault.at_start = devices.snapshot()
            devices.actions[fault.kind][0]()
            fault.applied_s = time.monotonic() - t0
            # The writer's count from when pause() returned (it waits for a block
            # being written): a block begun before the pause is not "during".
            fault.at_start["fifo_samples"] = devices.tone.written
            if progress:
                print(f"  {fault.applied_s:6.1f} s  {fault.kind}", flush=True)


def _stop(run: LiveRun, alive: bool) -> int | None:
    """Ctrl+C (SIGINT), as a user stops it, when still alive; the exit code, or None for a
    hang on exit (counted with the crashes)."""
    try:
        return run.wait(timeout=30, interrupt=alive)
    except subprocess.TimeoutExpired:
        return None
