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

This file is the entry point and what importers load (run_soak, main); the parts, one
concept each, are beside it: soak_faults.py (the devices' settings, the fault cycles and
schedule), soak_sampler.py (ProcSampler, /proc every second), soak_collect.py (the run
itself, collect), soak_record.py (Raw, what a run records, and its --raw file),
soak_analysis.py (analyse, in steps) with soak_results.py (result lines, stderr, rates),
soak_fault_effects.py (each fault's figures), soak_process.py (memory, threads, fds, CPU
over time) and soak_stats.py, and soak_report.py (format_table).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
# The virtual devices and `fusionedge run` in a subprocess are the live tests' own
# (tests/live/live_helpers.py), not a copy; tests/support.py trains the tiny model.
for _folder in (REPO / "tests" / "live", REPO / "tests"):
    if str(_folder) not in sys.path:
        sys.path.insert(0, str(_folder))
# The soak's parts are the soak_*.py modules beside this file. Run as a script, this folder
# is sys.path[0] already; loaded by path (as tests/live/test_live_soak.py does), it is on
# no path, so it is added, last, so that the other benchmarks' module names cannot shadow
# the importing process's own modules. Imported the ordinary way, the parts are in
# sys.modules, where their dataclasses look their module up.
if str(REPO / "benchmarks") not in sys.path:
    sys.path.append(str(REPO / "benchmarks"))

from live_helpers import VirtualMic, pulse_virtual_mic  # noqa: E402
from soak_analysis import analyse  # noqa: E402
from soak_collect import collect  # noqa: E402
from soak_faults import CYCLES, Fault, schedule  # noqa: E402
from soak_record import Raw, json_default, load_raw, save_raw  # noqa: E402
from soak_report import format_table  # noqa: E402
from soak_sampler import ProcSampler  # noqa: E402

# What importers of soak.py use (tests/live/test_live_soak.py: run_soak, format_table),
# wherever in the soak_*.py modules it is defined.
__all__ = [
    "CYCLES",
    "Fault",
    "ProcSampler",
    "Raw",
    "analyse",
    "collect",
    "format_table",
    "load_raw",
    "main",
    "run_soak",
    "schedule",
    "train_tiny_model",
]


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
            save_raw(raw, args.raw)
    report = analyse(raw)
    report["config"]["model"] = str(args.model) if args.model else "tiny (tests/support.py)"
    if args.out:
        args.out.write_text(json.dumps(report, indent=1, default=json_default))
    print(format_table(report))
    return 0 if all(report["targets"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
