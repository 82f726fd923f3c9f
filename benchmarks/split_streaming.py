"""Streaming compute: a split model with cached embeddings against the single file.

    .venv/bin/python benchmarks/split_streaming.py MODEL.onnx --data DIR [--split FOLDER]
        [--seconds 10] [--fps 30] [--hop-ms 100] [--threads 1] [--json]

A stream is replayed as fast as the CPU allows, turn by turn, as the live loop would see
it: camera frames at --fps (real test images, scaled to 640x480 as a camera delivers
them), audio made of the test clips laid end to end, and a text that changes every 3 s.
Each turn gives both models the same inputs: the frame, the audio window that ends at the
last hop boundary (the window a split model's cache holds) and the text.

- single: prepare every modality, one session run of the whole model, every turn;
- split:  runtime/streaming.py, as LiveRunner uses it: the image encoder per new frame,
          the audio encoder once per hop (its log-mel front end over the new hop only,
          the frames of the previous window reused), the text encoder when the text
          changes, and the fusion part every turn.

The two alternate turn by turn, so background load hits both alike. Reported: session
(inference) time and whole-turn time (with preprocessing) per second of stream, their
ratios, encoder runs per second, and the largest score difference between the two.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from fusionedge import preprocess
from fusionedge.contract import split_folder
from fusionedge.manifest import read_manifest
from fusionedge.runtime import Predictor
from fusionedge.runtime.streaming import StreamingEncoder

CAMERA_SIZE = (640, 480)
TEXTS = ("seven", "three", "nine", "one")
TEXT_PERIOD_S = 3.0


def load_stream(data: Path, predictor: Predictor, limit: int = 60) -> dict[str, Any]:
    """Camera-sized BGR frames and one long audio track at the model's rate, from the test
    split (samples that have both)."""
    manifest = read_manifest(data)
    records = [r for r in manifest.split("test") if r.image is not None and r.audio is not None][
        :limit
    ]
    if not records:
        raise SystemExit(f"{data}: no test samples with both an image and audio")
    root = manifest.path.parent
    frames = [
        cv2.resize(cv2.imread(str(root / r.image)), CAMERA_SIZE, interpolation=cv2.INTER_LINEAR)
        for r in records
    ]
    spec = predictor.spec.audio
    track = np.concatenate([preprocess.load_audio(root / r.audio, spec) for r in records])
    return {"frames": frames, "track": track, "rate": spec.sample_rate}


def audio_window(track: np.ndarray, end: int, n: int) -> np.ndarray:
    """The n samples of the looping track that end at sample index end."""
    return track[np.arange(end - n, end) % len(track)]


def replay(
    single: Predictor,
    split: Predictor,
    stream: dict[str, Any],
    seconds: float,
    fps: float,
    hop_s: float,
) -> dict[str, Any]:
    rate, track, frames = stream["rate"], stream["track"], stream["frames"]
    n_audio = split.spec.audio.num_samples
    streaming = StreamingEncoder(split, audio_hop_s=hop_s)
    hop = round(hop_s * rate)
    present = dict.fromkeys(split.spec.modalities, True)
    ns = {"single_inference": 0, "single_total": 0, "split_total": 0}
    max_diff, turns = 0.0, int(seconds * fps)
    for i in range(turns):
        t = i / fps
        frame = frames[i % len(frames)]
        end = (round(t * rate) // hop) * hop + n_audio  # the last hop boundary
        window = audio_window(track, end, n_audio)
        text = TEXTS[int(t // TEXT_PERIOD_S) % len(TEXTS)]

        t0 = time.perf_counter_ns()
        batch = single.stack(
            [
                single.prepare(
                    image=frame, color_order="bgr", audio=window, sample_rate=rate, text=text
                )
            ]
        )
        t1 = time.perf_counter_ns()
        single_scores, _ = single.run(batch)
        t2 = time.perf_counter_ns()
        streaming.update_image(
            i, lambda f=frame: split.prepare(image=f, color_order="bgr")["image"]
        )
        streaming.update_audio_window(end, window, end * 1_000_000_000 // rate)
        streaming.update_text(text, lambda s=text: split.prepare(text=s)["text"])
        split_scores, _ = streaming.scores(present)
        t3 = time.perf_counter_ns()

        ns["single_inference"] += t2 - t1
        ns["single_total"] += t2 - t0
        ns["split_total"] += t3 - t2
        max_diff = max(max_diff, float(np.abs(single_scores[0] - split_scores).max()))
    split_inference = sum(streaming.stats.inference_ns.values())
    per_s = {  # milliseconds of compute per second of stream
        "single_inference": ns["single_inference"] / 1e6 / seconds,
        "split_inference": split_inference / 1e6 / seconds,
        "single_total": ns["single_total"] / 1e6 / seconds,
        "split_total": ns["split_total"] / 1e6 / seconds,
    }
    return {
        "turns": turns,
        "seconds_of_stream": seconds,
        "fps": fps,
        "audio_hop_ms": hop_s * 1e3,
        "ms_per_stream_second": per_s,
        "inference_ratio": per_s["single_inference"] / per_s["split_inference"],
        "total_ratio": per_s["single_total"] / per_s["split_total"],
        "split_runs_per_second": {k: v / seconds for k, v in streaming.stats.runs.items()},
        "split_ms_per_run": {
            k: streaming.stats.inference_ns[k] / 1e6 / v for k, v in streaming.stats.runs.items()
        },
        "single_ms_per_run": ns["single_inference"] / 1e6 / turns,
        "max_abs_diff_scores": max_diff,
        "logmel_frames_per_second": streaming.stats.logmel_frames / seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", type=Path, help="the single .onnx file")
    parser.add_argument("--split", type=Path, help="its split folder (default MODEL.split)")
    parser.add_argument("--data", type=Path, required=True, help="data set (test split used)")
    parser.add_argument("--seconds", type=float, default=10.0, help="stream seconds replayed")
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--hop-ms", type=float, default=100.0, help="audio hop (default 100)")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (live: 1)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    options = {"threads": args.threads, "spinning": False}
    single = Predictor.from_path(args.model, **options)
    split = Predictor.from_path(args.split or split_folder(args.model), **options)
    stream = load_stream(args.data, single)
    replay(single, split, stream, 1.0, args.fps, args.hop_ms / 1e3)  # warm-up
    report = replay(single, split, stream, args.seconds, args.fps, args.hop_ms / 1e3)
    report |= {"model": str(args.model), "threads": args.threads, "providers": single.providers}
    if args.json:
        print(json.dumps(report, indent=2))
        return
    per_s = report["ms_per_stream_second"]
    print(
        f"{report['turns']} turns ({args.seconds:g} s of stream at {args.fps:g} fps, audio hop "
        f"{args.hop_ms:g} ms), {args.threads} thread(s), {', '.join(single.providers)}"
    )
    print(f"  {'ms per second of stream':<28}{'single':>10}{'split':>10}{'ratio':>8}")
    for key, label in (("inference", "inference (sessions)"), ("total", "whole turn")):
        a, b = per_s[f"single_{key}"], per_s[f"split_{key}"]
        print(f"  {label:<28}{a:>10.1f}{b:>10.1f}{a / b:>7.2f}x")
    runs = ", ".join(
        f"{k} {v:.1f}/s ({report['split_ms_per_run'][k]:.3f} ms)"
        for k, v in report["split_runs_per_second"].items()
    )
    print(f"  split part runs: {runs}; single file {report['single_ms_per_run']:.3f} ms/run")
    print(f"  max |score difference| split vs single: {report['max_abs_diff_scores']:.2e}")


if __name__ == "__main__":
    main()
