"""Capture-to-result latency: fusionedge's LiveRunner against a naive read-then-predict loop.

    .venv/bin/python benchmarks/live_latency.py MODEL.onnx [--fps 30] [--seconds 10]
        [--threads 1] [--size 640x480] [--providers auto] [--json]

A local MJPEG server on 127.0.0.1 plays the camera: it makes frames at a fixed rate in real
time and writes each frame's generation time (time.monotonic_ns()) into its pixels, 64 bits
as large black/white blocks in a band at the top (JPEG quality 90). Both loops decode the
stamp from the very frame the model was given, so latency is true capture-to-result on one
clock, including HTTP transport, buffering and decoding that the runtime cannot see.
- live:  CameraSource (newest frame on its own thread) + LiveRunner, no queue;
- naive: cv2.VideoCapture(url).read(), then prepare + run, repeat.
Both give the model the frame and, if it takes audio, silence (live: a silent WAV played in
real time through WavFileSource, so the ring/window path runs; naive: a fixed zero window).

What the loop itself adds is read apart from what the camera costs: a third block runs
CameraSource alone (stamp to hand-over: transport and decoding), and one turn's work is
timed alone (prepare + run on a camera frame). "The live loop adds" is the p95 of
hand-over to result (LiveResult's own figure) less that turn's p95.
"""

from __future__ import annotations

import argparse
import http.server
import json
import socketserver
import tempfile
import threading
import time
import wave
from pathlib import Path

import cv2
import numpy as np

from fusionedge.runtime import Predictor
from fusionedge.runtime.audio_sources import WavFileSource
from fusionedge.runtime.camera import CameraSource
from fusionedge.runtime.live import LiveOptions, LiveRunner

BITS, COLS = 64, 32  # the stamp: 2 rows of 32 blocks
WARMUP_S = 0.5  # results in the first moments of a block (stream probing) are not counted


def stamp_frame(background: np.ndarray, t_ns: int) -> np.ndarray:
    """A copy of background with t_ns written as black/white blocks in a band at the top."""
    image = background.copy()
    bw = image.shape[1] // COLS
    for i in range(BITS):
        r, c = divmod(i, COLS)
        image[r * bw : (r + 1) * bw, c * bw : (c + 1) * bw] = 255 * ((t_ns >> (63 - i)) & 1)
    return image


def read_stamp(image: np.ndarray) -> int:
    """Inverse of stamp_frame: the mean of each block's centre, thresholded at 128."""
    gray = image.mean(axis=2) if image.ndim == 3 else image
    bw, m = image.shape[1] // COLS, image.shape[1] // COLS // 4
    value = 0
    for i in range(BITS):
        r, c = divmod(i, COLS)
        block = gray[r * bw + m : (r + 1) * bw - m, c * bw + m : (c + 1) * bw - m]
        value = (value << 1) | int(block.mean() > 128)
    return value


class Camera:
    """Serves stamped JPEG frames as multipart/x-mixed-replace at a fixed rate, per client."""

    def __init__(self, fps: float, size: tuple[int, int]) -> None:
        rng = np.random.default_rng(0)
        h, w = size[1], size[0]
        ramp = np.linspace(0, 255, w, dtype=np.float32)[None, :, None]
        base = np.broadcast_to(ramp, (h, w, 3))
        self.backgrounds = [  # textured scenes, so JPEGs have a camera-like size
            np.clip(base + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8) for _ in range(8)
        ]
        self.fps = fps
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                start, k = time.monotonic(), 0
                try:
                    while True:
                        # Absolute schedule; a slot missed while send() blocked is skipped,
                        # never burst: a camera does not make frames in the past.
                        k = max(k + 1, int((time.monotonic() - start) * owner.fps))
                        time.sleep(max(0.0, start + k / owner.fps - time.monotonic()))
                        t_ns = time.monotonic_ns()
                        image = stamp_frame(owner.backgrounds[k % 8], t_ns)
                        _, jpg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
                        data = jpg.tobytes()
                        head = b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
                        self.wfile.write(head % len(data) + data + b"\r\n")
                        self.wfile.flush()
                except OSError:  # the client went away
                    pass

            def log_message(self, *args: object) -> None:
                pass

        class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/stream.mjpg"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def live_block(
    predictor: Predictor,
    url: str,
    wav: Path | None,
    seconds: float,
    out: list[float],
    own: list[float],
) -> float:
    """LiveRunner for WARMUP_S + seconds; appends true and self-reported latencies (ms)."""
    with CameraSource(url) as camera:
        audio = WavFileSource(wav, loop=True).start() if wav else None
        try:
            runner = LiveRunner(predictor, camera, audio, options=LiveOptions(stale_ms=1000))
            t0 = time.monotonic()
            for result in runner:
                t = time.monotonic_ns()
                if result.frame is not None and t / 1e9 - t0 >= WARMUP_S:
                    out.append((t - read_stamp(result.frame)) / 1e6)
                    own.append(result.latency_ms["capture_to_result"])
                if time.monotonic() - t0 >= WARMUP_S + seconds:
                    break
        finally:
            if audio is not None:
                audio.stop()
    return seconds


def camera_block(url: str, seconds: float, out: list[float]) -> float:
    """CameraSource alone, no model: stamp to hand-over (HTTP transport, buffering and
    JPEG decoding), the part of capture-to-result that no loop can avoid."""
    with CameraSource(url) as camera:
        t0 = time.monotonic()
        while time.monotonic() - t0 < WARMUP_S + seconds:
            frame = camera.take(timeout=1.0)
            if frame is not None and frame.t_ns / 1e9 - t0 >= WARMUP_S:
                out.append((frame.t_ns - read_stamp(frame.image)) / 1e6)
    return seconds


def naive_block(
    predictor: Predictor, url: str, silence: np.ndarray | None, seconds: float, out: list[float]
) -> float:
    """cv2.VideoCapture.read() then predict, repeat; appends true latencies (ms)."""
    rate = predictor.spec.audio.sample_rate if silence is not None else None
    cap = cv2.VideoCapture(url, cv2.CAP_FFMPEG)
    try:
        t0 = time.monotonic()
        while time.monotonic() - t0 < WARMUP_S + seconds:
            ok, image = cap.read()
            if not ok:
                raise RuntimeError(f"naive loop: cannot read {url}")
            inputs = predictor.prepare(
                image=image, color_order="bgr", audio=silence, sample_rate=rate
            )
            predictor.run(predictor.stack([inputs]))
            t = time.monotonic_ns()
            if t / 1e9 - t0 >= WARMUP_S:
                out.append((t - read_stamp(image)) / 1e6)
    finally:
        cap.release()
    return seconds


def model_alone(predictor: Predictor, image: np.ndarray, silence: np.ndarray | None) -> list[float]:
    """Predictor.run at batch 1 on prepared inputs, timed alone (ms), 20 warm-up runs."""
    rate = predictor.spec.audio.sample_rate if silence is not None else None
    batch = predictor.stack(
        [predictor.prepare(image=image, color_order="bgr", audio=silence, sample_rate=rate)]
    )
    times = []
    for i in range(320):
        t = time.perf_counter_ns()
        predictor.run(batch)
        if i >= 20:
            times.append((time.perf_counter_ns() - t) / 1e6)
    return times


def predict_alone(
    predictor: Predictor, image: np.ndarray, silence: np.ndarray | None
) -> list[float]:
    """prepare (a camera-sized BGR frame, the audio window) + stack + run, alone (ms): the
    work of one live turn without the loop around it."""
    rate = predictor.spec.audio.sample_rate if silence is not None else None
    times = []
    for i in range(320):
        t = time.perf_counter_ns()
        inputs = predictor.prepare(image=image, color_order="bgr", audio=silence, sample_rate=rate)
        predictor.run(predictor.stack([inputs]))
        if i >= 20:
            times.append((time.perf_counter_ns() - t) / 1e6)
    return times


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per loop")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--size", default="640x480", help="camera frame WxH")
    parser.add_argument("--providers", default="auto")
    parser.add_argument("--block", type=float, default=2.0, help="seconds per interleaved block")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    size = tuple(int(x) for x in args.size.lower().split("x"))

    predictor = Predictor.from_path(
        args.model, providers=args.providers, threads=args.threads, spinning=False
    )
    spec = predictor.spec
    if "image" not in spec.modalities:
        raise SystemExit(f"{args.model}: the model takes no image")
    camera = Camera(args.fps, size)  # type: ignore[arg-type]
    probe = stamp_frame(camera.backgrounds[0], 0x0123_4567_89AB_CDEF)
    _, jpg = cv2.imencode(".jpg", probe, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert read_stamp(cv2.imdecode(jpg, cv2.IMREAD_COLOR)) == 0x0123_4567_89AB_CDEF

    silence, wav = None, None
    tmp = tempfile.TemporaryDirectory()
    if spec.audio is not None:
        silence = np.zeros(spec.audio.num_samples, dtype=np.float32)
        wav = Path(tmp.name) / "silence.wav"
        with wave.open(str(wav), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(spec.audio.sample_rate)
            w.writeframes(b"\0\0" * spec.audio.sample_rate)

    model_ms = model_alone(predictor, probe, silence)
    predict_ms = predict_alone(predictor, probe, silence)
    # Interleaved in blocks (live, naive, live, ...) rather than one after the other, so
    # that drift in machine load, CPU clocks or thermal state lands on both loops alike.
    live_ms: list[float] = []
    own_ms: list[float] = []  # what LiveResult itself reports: stamped after decode
    naive_ms: list[float] = []
    camera_ms: list[float] = []
    live_s = naive_s = camera_s = 0.0
    while live_s < args.seconds or naive_s < args.seconds:
        if live_s < args.seconds:
            block = min(args.block, args.seconds - live_s)
            live_s += live_block(predictor, camera.url, wav, block, live_ms, own_ms)
        if naive_s < args.seconds:
            block = min(args.block, args.seconds - naive_s)
            naive_s += naive_block(predictor, camera.url, silence, block, naive_ms)
        if camera_s < args.seconds / 2:
            camera_s += camera_block(camera.url, min(args.block, args.seconds / 2), camera_ms)
    tmp.cleanup()

    rows = {
        "live": (pct(live_ms, 50), pct(live_ms, 95), len(live_ms) / live_s),
        "naive": (pct(naive_ms, 50), pct(naive_ms, 95), len(naive_ms) / naive_s),
    }
    m50, m95 = pct(model_ms, 50), pct(model_ms, 95)
    w50, w95 = pct(predict_ms, 50), pct(predict_ms, 95)
    c50, c95 = pct(camera_ms, 50), pct(camera_ms, 95)
    o50, o95 = pct(own_ms, 50), pct(own_ms, 95)
    print(f"{args.model}  {predictor.providers[0]}  threads={args.threads}  ", end="")
    print(f"camera {size[0]}x{size[1]} @ {args.fps:g} fps, {args.seconds:g} s per loop")
    print(f"{'':<34}{'p50 ms':>9}{'p95 ms':>9}{'results/s':>11}")
    table = [
        ("live loop, stamp to result", *rows["live"]),
        ("naive loop, stamp to result", *rows["naive"]),
        ("camera alone, stamp to hand-over", c50, c95, None),
        ("live loop, hand-over to result", o50, o95, None),
        ("one turn alone (prepare + run)", w50, w95, None),
        ("model alone (Predictor.run)", m50, m95, None),
    ]
    for name, p50, p95, rps in table:
        print(f"{name:<34}{p50:>9.2f}{p95:>9.2f}" + (f"{rps:>11.1f}" if rps else ""))
    adds = o95 - w95
    print(
        f"the live loop adds {adds:.2f} ms at p95 to one turn's own p95 (hand-over to result "
        f"against prepare + run alone); the naive loop is at {rows['naive'][1] - c95:.2f} ms "
        f"over the camera's own p95, the live loop at {rows['live'][1] - c95:.2f} ms"
    )
    ratio50, ratio95 = rows["naive"][0] / rows["live"][0], rows["naive"][1] / rows["live"][1]
    print(f"naive/live: p50 x{ratio50:.2f}, p95 x{ratio95:.2f}")
    if args.json:
        summary = {
            k: dict(zip(("p50_ms", "p95_ms", "results_per_s"), v, strict=True))
            for k, v in rows.items()
        }
        summary["camera_alone"] = {"p50_ms": c50, "p95_ms": c95}
        summary["live_from_hand_over"] = {"p50_ms": o50, "p95_ms": o95}
        summary["turn_alone"] = {"p50_ms": w50, "p95_ms": w95}
        summary["model"] = {"p50_ms": m50, "p95_ms": m95}
        summary["live_adds_p95_ms"] = adds
        summary["ratio_naive_live"] = {"p50": ratio50, "p95": ratio95}
        summary["config"] = {"fps": args.fps, "seconds": args.seconds, "threads": args.threads}
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
