"""The live turn against the model: Predictor.predict on a 640x480 BGR frame, 1 s of 48 kHz
PCM and a text, against the bare session.run on the same inputs prepared; per-stage
costs; and parity of the new preprocessing with the reference path (cv2.INTER_AREA) on
the test split, as files and as camera-sized frames.

    python benchmarks/live_turn.py /work/exp/qs/model.onnx --data /work/exp/qs/data
"""

from __future__ import annotations

import argparse
import json
import time

import cv2
import numpy as np
from area_shrink import area_shrink

from fusionedge import preprocess
from fusionedge.contract import OUTPUT_NAMES
from fusionedge.evaluation import pick_split
from fusionedge.runtime import Predictor
from fusionedge.runtime.bench import overhead
from fusionedge.timing import interleave, stats, timed_call

RATE = 48000


def reference_image(frame: np.ndarray, spec) -> np.ndarray:
    """The path before: cv2.INTER_AREA on the whole frame, then BGR -> RGB."""
    small = cv2.resize(frame, (spec.width, spec.height), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(small, cv2.COLOR_BGR2RGB)


def candidate_image(frame: np.ndarray, spec) -> np.ndarray:
    """area_shrink (exact area mean, not wired into prepare_image), BGR -> RGB."""
    return cv2.cvtColor(area_shrink(frame, spec.width, spec.height), cv2.COLOR_BGR2RGB)


def stages(predictor: Predictor, repeats: int) -> dict[str, float]:
    spec = predictor.spec
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    pcm = (0.1 * rng.standard_normal(RATE)).astype(np.float32)
    prepared = predictor.stack(
        [predictor.prepare(image=frame, color_order="bgr", audio=pcm, sample_rate=RATE, text="7")]
    )
    names = list(OUTPUT_NAMES)
    at_rate = prepared["audio"][0]
    work = {
        "session.run": lambda: predictor.session.run(names, prepared),
        "predict (48 kHz audio)": lambda: predictor.predict(
            image=frame, color_order="bgr", audio=pcm, sample_rate=RATE, text="7"
        ),
        "predict (audio at model rate)": lambda: predictor.predict(
            image=frame,
            color_order="bgr",
            audio=at_rate,
            sample_rate=spec.audio.sample_rate,
            text="7",
        ),
        "image: cv2 INTER_AREA + BGR2RGB (before)": lambda: reference_image(frame, spec.image),
        "image: prepare_image (now)": lambda: preprocess.prepare_image(frame, spec.image, "bgr"),
        "image: area_shrink + BGR2RGB (candidate)": lambda: candidate_image(frame, spec.image),
        "audio: prepare_audio 48 kHz": lambda: preprocess.prepare_audio(pcm, RATE, spec.audio),
        "Predictor.run (checks + session)": lambda: predictor.run(prepared),
    }
    calls = {k: timed_call(lambda i: None, lambda _, f=f: f()) for k, f in work.items()}
    times = interleave(calls, repeats)
    return {k: stats(v["inference"])["p50_ms"] for k, v in times.items()}


def parity(predictor: Predictor, data: str) -> dict[str, float]:
    """Files (the current path) and camera frames: new preprocessing vs the reference."""
    spec = predictor.spec
    _, _, records = pick_split(data, ("test",), 100_000, require_labels=False)
    file_diff, frame_diff, label_changes, pixel_diff, n, file_labels = 0.0, 0.0, 0, 0, 0, 0
    for r in records:
        raw = {m: getattr(r, m) for m in spec.modalities if r.has(m)}
        sample = predictor.prepare(**raw)
        if "image" in raw and preprocess._decode_image(raw["image"]).ndim == 3:
            sample["image"] = candidate_image(preprocess._decode_image(raw["image"]), spec.image)
        s_now = predictor.run(predictor.stack([sample]))[0][0]
        # The file path as before: decode, cv2 on the image.
        if "image" in raw:
            decoded = preprocess._decode_image(raw["image"])
            ref = reference_image(decoded, spec.image) if decoded.ndim == 3 else None
            if ref is not None:
                sample["image"] = ref
        s_ref = predictor.run(predictor.stack([sample]))[0][0]
        file_diff = max(file_diff, float(np.abs(s_now - s_ref).max()))
        file_labels += int(np.argmax(s_now) != np.argmax(s_ref))
        # The same sample as a camera gives it: the image at 640x480, the audio at 48 kHz.
        if "image" in raw:
            img = cv2.resize(preprocess._decode_image(raw["image"]), (640, 480))
            live = dict(raw, image=img, color_order="bgr")
            old = predictor.prepare(**live)
            new = dict(old, image=candidate_image(img, spec.image))
            pixel_diff += int((new["image"] != old["image"]).sum())
            s_new = predictor.run(predictor.stack([new]))[0][0]
            s_old = predictor.run(predictor.stack([old]))[0][0]
            frame_diff = max(frame_diff, float(np.abs(s_new - s_old).max()))
            label_changes += int(np.argmax(s_new) != np.argmax(s_old))
        n += 1
    return {
        "samples": n,
        "files_max_abs_score_diff": file_diff,
        "files_label_changes": file_labels,
        "camera_frames_max_abs_score_diff": frame_diff,
        "camera_frames_label_changes": label_changes,
        "camera_frames_pixel_values_changed": pixel_diff,
        "camera_frames_pixel_values": n * spec.image.height * spec.image.width * 3,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--data", required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=400)
    args = parser.parse_args()
    predictor = Predictor.from_path(args.model, providers="cpu", threads=args.threads)
    t = time.time()
    report = {
        "threads": args.threads,
        "overhead": overhead(predictor, args.repeats),
        "stages_p50_ms": stages(predictor, args.repeats),
        "parity": parity(predictor, args.data),
    }
    report["seconds"] = time.time() - t
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
