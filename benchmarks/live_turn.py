"""The live turn against the model: LiveRunner.step (inputs prepared as they arrive) and
Predictor.predict on a 640x480 BGR frame, 1 s of 48 kHz PCM and a text, against the bare
session.run on the same inputs prepared; per-stage costs; parity of the live ring's audio
(resampled block by block as it arrives) and of the old per-turn resampling with the
file path on the test split; and parity of a candidate image shrink (exact area mean,
not adopted) with cv2.INTER_AREA, as files and as camera-sized frames.

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
from fusionedge.runtime.audio_sources import AudioSource
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


def live_audio_windows(pcm: np.ndarray, n: int, model_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """The model's window at the file path's place (the centre), from 48 kHz audio played
    in 20 ms blocks: cut from the ring at the model's rate (now), and resampled from the
    device ring for that one window by the turn right after the block that completes it
    (before). 0.2 s of silence follows the clip, as a microphone goes on hearing."""
    played = np.concatenate([pcm, np.zeros(RATE // 5, np.float32)])
    source = AudioSource(RATE, capacity_s=len(played) / RATE + 1)
    ring = source.ring_at(model_rate)
    total = preprocess.resampled_length(len(pcm), RATE, model_rate)
    stop = (total - n) // 2 + n  # the window's end, in samples at the model's rate
    block, old = RATE // 50, None
    for end in range(block, len(played) + 1, block):
        source.write(played[end - block : end], end * 10**9 // RATE)
        if old is None and stop * RATE <= end * model_rate:
            old = _per_turn_window(source, n, model_rate, stop)
    return ring.window_at(n, stop).samples, old


def _per_turn_window(source: AudioSource, n: int, model_rate: int, stop: int) -> np.ndarray:
    """What AudioSource.window did for each turn before the live ring: resample the newest
    device samples (64 more than the window), keep the last n, ending at `stop`."""
    import soxr

    end_device = -(-stop * RATE // model_rate)
    raw = source.ring.window_at(-(-n * RATE // model_rate) + 64, end_device).samples
    return soxr.resample(raw, RATE, model_rate, quality="HQ")[-n:]


def audio_parity(predictor: Predictor, data: str) -> dict[str, float]:
    """Scores with the live window (now) and the per-turn window (before) against the file
    path's window of the same 48 kHz audio, each sample's other inputs as files."""
    spec = predictor.spec
    _, _, records = pick_split(data, ("test",), 100_000, require_labels=False)
    diffs: dict[str, list[float]] = {"ring": [], "per_turn": []}
    labels = {"ring": 0, "per_turn": 0}
    samples = 0
    for r in records:
        if not r.has("audio"):
            continue
        raw = {m: getattr(r, m) for m in spec.modalities if r.has(m)}
        mono, rate = preprocess.read_audio(raw["audio"])
        pcm = preprocess.resample(preprocess.to_mono_float32(mono, "audio"), rate, RATE)
        pcm = np.clip(pcm, -1.0, 1.0)  # resampling overshoots; a microphone's converter clips
        # The file path on the recording as a 48 kHz microphone captured it.
        heard = preprocess.prepare_audio(pcm, RATE, spec.audio)
        sample = dict(predictor.prepare(**raw), audio=heard)
        file_scores = predictor.run(predictor.stack([sample]))[0][0]
        ring, per_turn = live_audio_windows(pcm, spec.audio.num_samples, spec.audio.sample_rate)
        for name, window in (("ring", ring), ("per_turn", per_turn)):
            scores = predictor.run(predictor.stack([dict(sample, audio=window)]))[0][0]
            diffs[name].append(float(np.abs(scores - file_scores).max()))
            labels[name] += int(np.argmax(scores) != np.argmax(file_scores))
        samples += 1
    out: dict[str, float] = {"samples": samples}
    for name in diffs:
        out[f"{name}_max_abs_score_diff"] = max(diffs[name])
        out[f"{name}_p50_abs_score_diff"] = float(np.median(diffs[name]))
        out[f"{name}_label_changes"] = labels[name]
    return out


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
        "audio_parity": audio_parity(predictor, args.data),
        "image_candidate_parity": parity(predictor, args.data),
    }
    report["seconds"] = time.time() - t
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
