"""A 60 s soak of `fusionedge run`: benchmarks/soak.py's own run, with its short cycle.

The real console script runs headless on the virtual camera (FaultyMjpegServer) and
microphone (the virtual_mic fixture's PulseAudio pipe source, fed by FifoTone) for 60 s
after its first complete result: 12 s without faults (the reference rate), then one short
cycle: the camera gone 5 s, the microphone stalled 3 s, 1 s of corrupt JPEGs, 3 s of 4K
frames, 4 s of 1280x720 frames. One run (about 62 s with start-up) serves every test
below; the 10-minute version and its figures are in benchmarks/RESULTS.md ("Live soak").

The targets are the benchmark's (results/s outside the fault windows >= 90 % of the
fault-free rate, RSS growth <= 10 MB, threads and fds flat, no crash); the margins below
are what 60 s on a shared 2-core machine allows, each said where it is applied.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from live_helpers import CORRUPT_KINDS, VirtualMic


def _load_soak():
    """benchmarks/soak.py, imported by path (benchmarks/ is no package; soak.py itself
    puts its folder on sys.path for its soak_*.py parts): the test runs the benchmark's own
    measurement."""
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "soak.py"
    spec = importlib.util.spec_from_file_location("soak", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["soak"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


soak = sys.modules.get("soak") or _load_soak()

DURATION_S = 60.0
WARMUP_S = 12.0


@pytest.fixture(scope="module")
def report(live_model: Path, virtual_mic: VirtualMic) -> dict[str, Any]:
    out = soak.run_soak(live_model, virtual_mic, DURATION_S, WARMUP_S, cycle="short", grace_s=1.0)
    print("\n" + soak.format_table(out))
    return out


def fault(report: dict[str, Any], kind: str) -> dict[str, Any]:
    (one,) = [f for f in report["faults"] if f["kind"] == kind]  # one short cycle
    return one


def test_no_crash(report: dict[str, Any]) -> None:
    """No margin: a crash is a crash. Alive when the 60 s were up, exit 0 on SIGINT
    (Ctrl+C, as a user stops it), no traceback on stderr."""
    crashes = report["crashes"]
    assert crashes["alive_at_end"], crashes
    assert crashes["exit_code"] == 0, crashes
    assert crashes["tracebacks"] == 0, crashes
    # It says how many results it made: all it printed (or one fewer, if the SIGINT came
    # between printing a line and counting it).
    said = re.search(r"^(\d+) results$", crashes["stderr_tail"], re.M)
    assert said, crashes
    assert int(said[1]) in (report["rates"]["results"], report["rates"]["results"] - 1)


def test_results_keep_coming_outside_the_faults(report: dict[str, Any]) -> None:
    rates = report["rates"]
    # The reference itself: the camera serves 30 fps and the loop makes one result per
    # frame; under 20/s the machine was too busy for the ratio below to mean anything.
    assert rates["fault_free_hz"] >= 20, rates
    # Target 0.90; 0.80 here. The reference is 9 s of warm-up and the time outside the
    # fault windows 27 s: another test's CPU burst that stalls the loop for 1 s costs
    # 3.7 points of the ratio, where over the benchmark's 9 minutes it costs 0.3.
    assert rates["ratio"] >= 0.80, rates
    assert rates["complete_ratio"] >= 0.75, rates  # the same, results with both inputs


def test_memory_does_not_grow(report: dict[str, Any]) -> None:
    memory = report["memory"]
    # Target: <= 10 MB from the first cycle's median to the last one's. 60 s hold one
    # cycle, so here the growth from the warm-up to that cycle is judged, one-off
    # allocations included. The 4K frames, each at its own size (runtime/mjpeg.py), raise
    # RSS by ~75 MB while they last; glibc would keep ~50 MB of that afterwards, and
    # mjpeg.FrameMemory hands it back after a second of smaller frames (+5 MB measured
    # since warm-up). 25 MB allows what stays and still fails a leak per frame or per
    # reconnection (a camera outage, a corrupt burst).
    assert memory["growth_since_warmup_mb"] <= 25, memory


def test_threads_and_fds_stay_flat(report: dict[str, Any]) -> None:
    counts = report["counts"]
    # Medians of the clean tails (warm-up's second half, the 15 s after the cycle). +1 for
    # a worker started on first use by one of the faults; a thread or fd left behind per
    # reconnection would add ~20.
    for key in ("threads", "fds"):
        assert counts[key]["growth_since_warmup"] <= 1, (key, counts[key])
        assert counts[key]["max"] <= counts[key]["warmup"] + 5, (key, counts[key])


def test_the_camera_was_gone_and_came_back(report: dict[str, Any]) -> None:
    gone = fault(report, "camera_gone")
    # Once stale_ms (500) + 0.5 s have passed, every result says "no image" ...
    assert gone["absent_once_stale"] >= 0.99, gone
    # ... and results keep coming on the microphone at idle_hz (10/s).
    assert gone["rate_hz"] >= 5, gone
    assert gone["audio_present"] >= 0.9, gone
    assert gone["server"].get("connections", 0) >= 1, gone  # it reconnected
    assert gone["stderr"]["camera_warning"] >= 1, gone
    # Reopen backoff 0.25 s doubling up to 1 s: an attempt comes within 1 s of the server
    # being back (measured 0.7 s; 2.7 s when the longest wait was 4 s); 3 s allows a
    # slow open on a loaded machine.
    assert gone["recovery_s"] <= 3, gone


def test_the_microphone_stalled_and_came_back(report: dict[str, Any]) -> None:
    stall = fault(report, "mic_stall")
    assert stall["fifo_samples_during"] == 0, stall  # the writer really stopped
    # Every turn the loop began stale_ms (500) + 0.5 s after the writer stopped says "no
    # audio" (the soak places results by when the loop judged them, on its own clock,
    # and the fault from when it was applied: a busy harness is late with both) ...
    assert stall["absent_once_stale"] >= 0.99, stall
    assert stall["image_present"] >= 0.9, stall  # the camera keeps driving the loop
    assert stall["stderr"]["audio_warning"] >= 1, stall  # the source saw it and reopened
    # ... and audio is back before the next fault, 4 s on (inf if it is not).
    assert stall["recovery_s"] <= 5, stall


def test_corrupt_jpegs_were_sent_and_survived(report: dict[str, Any]) -> None:
    corrupt = fault(report, "corrupt_jpeg")
    for kind in CORRUPT_KINDS:
        assert corrupt["server"].get(kind, 0) >= 3, corrupt
    # libjpeg decodes a bit-flipped frame with errors (runtime/mjpeg.py); a truncated or
    # garbage one is refused before it is decoded, counted and reported by the camera.
    assert corrupt["stderr"]["decoder_error"] >= 1, corrupt
    assert corrupt["stderr"]["camera_warning"] >= 1, corrupt
    assert corrupt["recovery_s"] <= 6, corrupt


@pytest.mark.parametrize(("kind", "size"), [("4k_burst", "3840x2160"), ("size_change", "1280x720")])
def test_frames_of_another_size_were_taken(report: dict[str, Any], kind: str, size: str) -> None:
    burst = fault(report, kind)
    # The server sends no faster than the client reads (missed slots are skipped), so
    # frames sent is frames the camera took: 30/s asked, >= 10 over 3-4 s is the floor of
    # a 4K decode on a busy core.
    assert burst["server"].get(size, 0) >= 10, burst
    # Image kept while the size changes (a frame each 500 ms is enough).
    assert burst["image_present"] >= 0.8, burst
    assert burst["recovery_s"] <= 6, burst
