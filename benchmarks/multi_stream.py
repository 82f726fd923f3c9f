"""Many streams on one box: one `fusionedge run` with N streams (one batching model)
against N separate `fusionedge run` processes, one stream each.

    .venv/bin/python benchmarks/multi_stream.py MODEL.onnx --data DATA [--streams 4]
        [--seconds 20] [--rounds 2] [--fps 30] [--rate HZ] [--threads 1] [--max-batch 8]
        [--multi-threads T] [--max-runs R] [--batch-wait-ms MS] [--shared-mic]
        [--out result.json]

The virtual cameras are video files made by examples/make_clip.py from DATA's test split
(320x240 MJPG at --fps, one WAV each, or one WAV for all with --shared-mic), played in
real time and looped by CameraSource and WavFileSource, exactly as `fusionedge run
--camera FILE --mic FILE --loop` plays them. Blocks alternate, multi then separate, for
--rounds rounds of --seconds each. In each block the processes are started, given time
to load and warm up (every stream has printed a line, then WARMUP_S more), and then
measured for --seconds: results whose capture time t falls in the window (t is
time.monotonic(), one clock for every process on Linux), their capture_to_result
latency, and the CPU time the processes spent in the window (/proc/PID/stat, every
thread). Then they get SIGINT (Ctrl-C), the path a user takes.

Where the time goes: each turn's own breakdown (preprocess, inference, total, from the
JSON lines), how the multi batched (rows per model run; the wait for company and the
model's load at the end, from the line run_multi logs), the model alone at batch 1 to N
with the threads of each setup (ONNX Runtime), and a frame's JPEG decoding alone (on the
capture thread, not in the turn).

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
WARMUP_S = 2.0  # after every stream's first line: model warm, rings full
CLK_TCK = os.sysconf("SC_CLK_TCK")


def make_cameras(data: Path, folder: Path, n: int, fps: float, shared_mic: bool) -> list:
    """n (video, wav) pairs from one make_clip.py clip; each camera is its own file, so
    each stream decodes its own copy, as separate cameras would."""
    stem = folder / "clip"
    cmd = [sys.executable, str(REPO / "examples" / "make_clip.py"), str(data), str(stem)]
    subprocess.run([*cmd, "--n", "10", "--seconds", "1", "--fps", str(fps)], check=True)
    pairs = []
    for i in range(n):
        avi, wav = folder / f"cam{i}.avi", folder / f"mic{i}.wav"
        shutil.copy(stem.with_suffix(".avi"), avi)
        if i == 0 or not shared_mic:
            shutil.copy(stem.with_suffix(".wav"), wav)
        pairs.append((avi, folder / "mic0.wav" if shared_mic else wav))
    return pairs


def fusionedge() -> list[str]:
    script = Path(sys.executable).with_name("fusionedge")
    return [str(script)] if script.exists() else [sys.executable, "-m", "fusionedge.cli"]


def commands(args: argparse.Namespace, pairs: list, multi: bool) -> list[list[str]]:
    """The command lines of one block: one with every stream, or one per stream."""
    common = [*fusionedge(), "run", str(args.model), "--headless", "--loop"]
    common += ["--providers", "cpu"]
    if args.rate:
        common += ["--rate", str(args.rate)]
    if not multi:
        common += ["--threads", str(args.threads)]
        return [[*common, "--camera", str(avi), "--mic", str(wav)] for avi, wav in pairs]
    cmd = list(common)
    if args.multi_threads is not None:  # else run's default for several streams
        cmd += ["--threads", str(args.multi_threads)]
    cmd += ["--max-batch", str(args.max_batch)]
    if args.max_runs:
        cmd += ["--max-runs", str(args.max_runs)]
    if args.batch_wait_ms is not None:
        cmd += ["--batch-wait-ms", str(args.batch_wait_ms)]
    for avi, _ in pairs:
        cmd += ["--camera", str(avi)]
    for wav in dict.fromkeys(w for _, w in pairs):  # a shared WAV is given once
        cmd += ["--mic", str(wav)]
    return [cmd]


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def wait_for_streams(outs: list[Path], streams: int, procs: list, timeout: float = 90.0) -> None:
    """Until every stream has printed a line (the model loaded, the sources open)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        seen = set()
        for i, out in enumerate(outs):
            for line in out.read_text().splitlines()[:400]:
                if line.endswith("}"):
                    seen.add((i, json.loads(line).get("stream", 0)))
        if len(seen) >= streams:
            return
        if any(p.poll() is not None for p in procs):
            raise RuntimeError(f"a run ended early: see {outs[0].with_suffix('.err')}")
        time.sleep(0.2)
    raise RuntimeError(f"not every stream printed within {timeout:.0f} s")


def run_block(cmds: list[list[str]], streams: int, seconds: float, folder: Path, tag: str) -> dict:
    """Starts cmds, measures a window of `seconds` after the warm-up, then Ctrl-C."""
    outs = [folder / f"{tag}-{i}.jsonl" for i in range(len(cmds))]
    procs = []
    for cmd, out in zip(cmds, outs, strict=True):
        with out.open("w") as o, out.with_suffix(".err").open("w") as e:
            procs.append(subprocess.Popen(cmd, stdout=o, stderr=e))
    try:
        wait_for_streams(outs, streams, procs)
        time.sleep(WARMUP_S)
        t0, c0 = time.monotonic(), sum(cpu_s(p.pid) for p in procs)
        time.sleep(seconds)
        t1, c1 = time.monotonic(), sum(cpu_s(p.pid) for p in procs)
    finally:
        for p in procs:
            p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
    lines: dict[int, list[dict]] = {}
    for i, out in enumerate(outs):
        for text in out.read_text().splitlines():
            if text.endswith("}"):
                line = json.loads(text)
                if t0 <= line["t"] <= t1:
                    lines.setdefault(line.get("stream", i), []).append(line)
    return {
        "window_s": t1 - t0,
        "cpu_s": c1 - c0,
        "lines": lines,
        "batching": batching(outs[0].with_suffix(".err")) if len(cmds) == 1 else None,
    }


def batching(err: Path) -> dict:
    """Rows per model run, and the wait for company at the end, from the line run_multi
    logs at its end."""
    text = err.read_text()
    rows = re.search(r"rows per run (\{[^}]*\})", text)
    wait = re.search(r"waits up to ([\d.]+) ms for the other streams \(model load ([\d.]+)\)", text)
    return {
        "rows": json.loads(rows.group(1)) if rows else {},
        "wait_ms": float(wait.group(1)) if wait else None,
        "model_load": float(wait.group(2)) if wait else None,
    }


def pct(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 2) if values else float("nan")


def summarize(blocks: list[dict], streams: int) -> dict:
    """One kind's blocks together: rates averaged over blocks, latencies pooled."""
    per_stream = [
        float(np.mean([len(b["lines"].get(s, [])) / b["window_s"] for b in blocks]))
        for s in range(streams)
    ]
    lines = [x for b in blocks for s in b["lines"].values() for x in s]
    results = sum(len(s) for b in blocks for s in b["lines"].values())
    cpu, window = sum(b["cpu_s"] for b in blocks), sum(b["window_s"] for b in blocks)
    turn = {
        key: round(float(np.mean([x["latency_breakdown_ms"][key] for x in lines])), 3)
        for key in ("preprocess", "inference", "total")
    }
    merged: dict[str, int] = {}
    for b in blocks:
        for size, n in (b["batching"] or {}).get("rows", {}).items():
            merged[size] = merged.get(size, 0) + n
    ends = [b["batching"] for b in blocks if b["batching"]]
    return {
        "results_per_s_per_stream": [round(r, 2) for r in per_stream],
        "results_per_s_total": round(sum(per_stream), 2),
        "latency_ms_p50": pct([x["latency_ms"] for x in lines], 50),
        "latency_ms_p95": pct([x["latency_ms"] for x in lines], 95),
        "cpu_ms_per_result": round(1e3 * cpu / max(1, results), 3),
        "cpu_cores_used": round(cpu / window, 2),
        "turn_mean_ms": turn,
        "rows_per_model_run": merged or None,
        "wait_ms_at_end": [e["wait_ms"] for e in ends] or None,
        "model_load_at_end": [e["model_load"] for e in ends] or None,
    }


def model_alone(model: Path, threads: int, batch: int, runs: int = 200) -> dict:
    """ms per model run at batch 1 to `batch` (median), the same session options as
    `fusionedge run`; with random inputs (time does not depend on content)."""
    from fusionedge.runtime import Predictor

    with Predictor.from_path(model, providers="cpu", threads=threads, spinning=False) as p:
        rng = np.random.default_rng(0)
        given = {
            "image": rng.integers(0, 256, (240, 320, 3), dtype=np.uint8),
            "audio": rng.normal(0, 0.1, p.spec.audio.sample_rate).astype(np.float32),
            "text": "seven",
        }
        sample = {m: given[m] for m in p.spec.modalities}
        if "audio" in sample:
            sample["sample_rate"] = p.spec.audio.sample_rate
        row = p.prepare(**sample)
        out = {}
        for n in range(1, batch + 1):
            inputs = p.stack([row] * n)
            times = []
            for _ in range(runs):
                t = time.perf_counter()
                p.run(inputs)
                times.append((time.perf_counter() - t) * 1e3)
            out[f"batch_{n}_ms"] = round(float(np.median(times)), 3)
        out["per_row_ms_batched"] = round(out[f"batch_{batch}_ms"] / batch, 3)
        return out


def capture_alone(avi: Path, model: Path, frames: int = 200) -> dict:
    """ms per frame of what the capture thread does: JPEG decoding and the model's image
    preparation (resize), outside the turn."""
    import cv2

    from fusionedge.runtime import Predictor

    cap = cv2.VideoCapture(str(avi))
    decoded, t = [], time.perf_counter()
    for _ in range(frames):
        ok, image = cap.read()
        if not ok:
            break
        decoded.append(image)
    decode = (time.perf_counter() - t) * 1e3 / len(decoded)
    cap.release()
    with Predictor.from_path(model, providers="cpu", threads=1) as p:
        t = time.perf_counter()
        for image in decoded:
            p.prepare(image=image, color_order="bgr")
        prepare = (time.perf_counter() - t) * 1e3 / len(decoded)
    return {"decode_ms": round(decode, 3), "prepare_ms": round(prepare, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="a .onnx file")
    parser.add_argument("--data", type=Path, required=True, help="data set for the clips")
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=20.0, help="measured per block")
    parser.add_argument("--rounds", type=int, default=2, help="multi, separate; repeated")
    parser.add_argument("--fps", type=float, default=30.0, help="camera frame rate")
    parser.add_argument("--rate", type=float, help="--rate of fusionedge run (default none)")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads")
    parser.add_argument(
        "--multi-threads", type=int, help="--threads of the multi (default: run's, every core)"
    )
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--max-runs", type=int, help="model runs at once (multi; default: run's)")
    parser.add_argument(
        "--batch-wait-ms", type=float, help="multi: --batch-wait-ms of run (default: run's)"
    )
    parser.add_argument("--shared-mic", action="store_true", help="one WAV for all streams")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        pairs = make_cameras(args.data, folder, args.streams, args.fps, args.shared_mic)
        blocks: dict[str, list[dict]] = {"multi": [], "separate": []}
        for r in range(args.rounds):
            for kind in blocks:
                cmds = commands(args, pairs, multi=kind == "multi")
                blocks[kind].append(run_block(cmds, args.streams, args.seconds, folder, kind))
                print(f"round {r + 1}: {kind} done", file=sys.stderr)
        capture = capture_alone(pairs[0][0], args.model)
    report(args, {k: summarize(v, args.streams) for k, v in blocks.items()}, capture)


def report(args: argparse.Namespace, kinds: dict[str, dict], capture: dict) -> None:
    multi, separate = kinds["multi"], kinds["separate"]
    ratio = multi["results_per_s_total"] / separate["results_per_s_total"]
    p95_ok = multi["latency_ms_p95"] <= separate["latency_ms_p95"]
    offered = args.streams * (min(args.fps, args.rate) if args.rate else args.fps)
    summary = {
        "model": str(args.model),
        "streams": args.streams,
        "fps": args.fps,
        "rate_hz": args.rate,
        "threads": args.threads,
        "multi_threads": args.multi_threads,
        "max_batch": args.max_batch,
        "max_runs": args.max_runs,
        "batch_wait_ms": args.batch_wait_ms,
        "shared_mic": args.shared_mic,
        "seconds_per_block": args.seconds,
        "rounds": args.rounds,
        "cpus": os.cpu_count(),
        "frames_offered_per_s": offered,
        "multi": multi,
        "separate": separate,
        "throughput_ratio": round(ratio, 3),
        "p95_equal_or_lower": p95_ok,
        "target_met": ratio >= 1.5 and p95_ok,
        "model_alone": {
            f"threads_{t}": model_alone(args.model, t, args.streams)
            for t in sorted({args.threads, 0 if args.multi_threads is None else args.multi_threads})
        },
        "capture_per_frame": capture,
    }
    text = json.dumps(summary, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
