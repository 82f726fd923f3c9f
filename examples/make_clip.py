"""Turn test samples of a data set into a video + audio recording, for the live loop.

    python examples/make_clip.py quickstart/data clip --n 10
    fusionedge run quickstart/model.onnx --camera clip.avi --mic clip.wav --headless

Each sample becomes `--seconds` of video (its image repeated at `--fps`) and the same span
of audio (its recording, padded with silence), so a recorded demo session can be replayed
through exactly the capture stack a live camera and microphone use. clip.json lists which
sample plays when.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np
import soundfile

from fusionedge.manifest import read_manifest
from fusionedge.preprocess import read_audio, resample, to_mono_float32


def make_clip(
    data: Path, out: Path, n: int, seconds: float, fps: float, size: tuple[int, int], rate: int
) -> list[dict]:
    records = [r for r in read_manifest(data).split("test") if r.image and r.audio][:n]
    video = cv2.VideoWriter(
        str(out.with_suffix(".avi")), cv2.VideoWriter_fourcc(*"MJPG"), fps, (size[1], size[0])
    )
    if not video.isOpened():
        raise RuntimeError("OpenCV cannot write MJPG AVI files here")
    audio, timeline = [], []
    per_sample = round(seconds * rate)
    for i, r in enumerate(records):
        frame = cv2.resize(cv2.imread(str(r.image)), (size[1], size[0]))
        for _ in range(round(seconds * fps)):
            video.write(frame)
        pcm, sr = read_audio(r.audio)
        pcm = resample(to_mono_float32(pcm), sr, rate)[:per_sample]
        # The utterance sits at the end of its span, as if spoken while the card is shown,
        # so the window that ends with the span's last frame holds all of it.
        span = np.zeros(per_sample, dtype=np.float32)
        span[per_sample - len(pcm) :] = pcm
        audio.append(span)
        timeline.append(
            {"id": r.id, "label": r.label, "start_s": i * seconds, "end_s": (i + 1) * seconds}
        )
    video.release()
    soundfile.write(str(out.with_suffix(".wav")), np.concatenate(audio), rate, subtype="PCM_16")
    out.with_suffix(".json").write_text(json.dumps(timeline, indent=2) + "\n")
    return timeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", type=Path, help="data set folder")
    parser.add_argument("out", type=Path, help="output stem: writes OUT.avi, OUT.wav, OUT.json")
    parser.add_argument("--n", type=int, default=10, help="test samples (default 10)")
    parser.add_argument("--seconds", type=float, default=1.5, help="seconds per sample")
    parser.add_argument("--fps", type=float, default=30.0, help="video frame rate")
    parser.add_argument("--rate", type=int, default=16000, help="audio sample rate")
    args = parser.parse_args()
    timeline = make_clip(args.data, args.out, args.n, args.seconds, args.fps, (240, 320), args.rate)
    print(f"wrote {args.out}.avi/.wav/.json: {len(timeline)} samples")


if __name__ == "__main__":
    main()
