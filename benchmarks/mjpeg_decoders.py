"""FFmpeg's MJPEG decoding against libjpeg's, on the same JPEGs.

    .venv/bin/python benchmarks/mjpeg_decoders.py [--data DATA] [--frames 20] [--quality 85]

Why CameraSource decodes MJPEG itself (runtime/mjpeg.py): OpenCV's FFmpeg capture decodes
with FFmpeg's own decoder, the training images were decoded by libjpeg (cv2.imread). The
frames are 640x480 JPEGs at --quality: a ramp with noise, as the live tests' camera sends,
and, with --data, the data set's test images scaled up into the frame. They are written
back to back as one .mjpeg stream and read three ways: cv2.VideoCapture as it decodes
(FFmpeg), cv2.VideoCapture handing over the JPEGs undecoded and cv2.imdecode on each (the
camera's path), and cv2.imdecode on the bytes as written (the reference). Prints, per
kind of picture, how far each way's pixels are from the reference (mean and largest
absolute difference, in levels of 255) and the decoding time per frame.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

SIZE = (640, 480)


def noise_frames(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 255, SIZE[0], dtype=np.float32)[None, :, None]
    return [
        np.clip(ramp + rng.normal(0, 12, (SIZE[1], SIZE[0], 3)), 0, 255).astype(np.uint8)
        for _ in range(n)
    ]


def data_frames(data: Path, n: int) -> list[np.ndarray]:
    from fusionedge.manifest import read_manifest

    records = [r for r in read_manifest(data).split("test") if r.image][:n]
    return [
        cv2.resize(cv2.imread(str(r.image)), SIZE, interpolation=cv2.INTER_CUBIC) for r in records
    ]


def decode_three_ways(jpegs: list[bytes], folder: Path) -> dict[str, dict]:
    path = folder / "frames.mjpeg"
    path.write_bytes(b"".join(jpegs))
    reference = [cv2.imdecode(np.frombuffer(j, np.uint8), cv2.IMREAD_COLOR) for j in jpegs]
    out = {}
    for way in ("ffmpeg", "camera"):
        cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
        if way == "camera":
            assert cap.set(cv2.CAP_PROP_FORMAT, -1), "this OpenCV cannot hand over JPEGs"
        images, t0 = [], time.perf_counter()
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            images.append(
                cv2.imdecode(frame.reshape(-1), cv2.IMREAD_COLOR) if way == "camera" else frame
            )
        ms = (time.perf_counter() - t0) * 1e3 / max(1, len(images))
        cap.release()
        diffs = [
            np.abs(a.astype(np.int16) - b.astype(np.int16))
            for a, b in zip(images, reference, strict=True)
        ]
        out[way] = {
            "frames": len(images),
            "mean_abs_diff": round(float(np.mean([d.mean() for d in diffs])), 3),
            "max_abs_diff": int(max(d.max() for d in diffs)),
            "ms_per_frame": round(ms, 3),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="a data set: its test images as well")
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--quality", type=int, default=85)
    args = parser.parse_args()
    kinds = {"noise": noise_frames(args.frames)}
    if args.data:
        kinds["data"] = data_frames(args.data, args.frames)
    report = {"quality": args.quality, "size": SIZE}
    with tempfile.TemporaryDirectory() as tmp:
        for kind, frames in kinds.items():
            jpegs = [
                cv2.imencode(".jpg", f, [cv2.IMWRITE_JPEG_QUALITY, args.quality])[1].tobytes()
                for f in frames
            ]
            report[kind] = decode_three_ways(jpegs, Path(tmp))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
