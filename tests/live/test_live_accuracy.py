"""`fusionedge run` end to end, scored: held-out samples shown to the virtual camera and
spoken into the virtual microphone as a person would, live accuracy against offline.

Every test sample of the live data set becomes one segment of a scripted scene, drawn by
fusionedge.live_eval (the scene builder of `fusionedge eval --live`) with a generator
seeded by (SEED, the sample's id):

- camera: the image pasted at 40-100 % scale and a random place on a 640x480 background
  and JPEG-encoded at quality 60-90 (live_eval.camera_jpeg); the MJPEG server sends those
  bytes for the whole segment, a card held up;
- microphone: the utterance at a random offset in SEGMENT_S of white noise at 20-30 dB
  SNR (live_eval.audio_scene, at the virtual microphone's 16 kHz), then TAIL_S more of
  the same noise: the card stays up a moment after the word, so an utterance at the end
  of its stretch still has turns after it.

One `fusionedge run MODEL --camera URL --mic pulse --headless` (a subprocess, as a user
starts it) sees all segments; playback starts once its lines show both inputs, and a
SIGINT (Ctrl-C) ends it after the last segment.

Judging, by the `t` of the JSON lines (capture time of the turn's frame, where its audio
window ends, on this process's time.monotonic() clock), not by wall-clock sleeps: a
segment's live label is the vote (live_eval.vote: majority, ties by mean score) of the
lines whose window holds the utterance, t in [event end, event start + window], widened
by LATENCY_S for the microphone's delay (the window ending at t holds what was played a
little before t) and kept inside the segment. The event is live_eval's: the utterance,
cut to its centre when it is longer than the window less a frame (the data set's 0.6 s
tones against the model's 0.5 s window). Offline, Predictor.predict scores the same
samples' image and audio files, as `fusionedge eval` decodes them. Neither side has text:
the run has no --text, and a fixed text would be the same for every segment.

The model is the live tests' tiny one (conftest.live_model). It is right on every test
file, but only by a few hundredths of score, so some scenes sit near its edge: at SEED 0
one red sample is called red only by windows that hold (nearly) all of its tone, hence
the narrow LATENCY_S. Other seeds draw walls that flip a card whatever is heard: with
SEED = 2 two blue cards on reddish walls are called red by every judged line (live 10 of
12, offline 12 of 12) and this test fails, as it should (`fusionedge eval --live --seed 2`
misses one of them too).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from live_helpers import FifoPlayer, LiveRun, PacedMjpegServer, VirtualMic, wait_for

from fusionedge.live_eval import (
    LiveSettings,
    active_span,
    audio_scene,
    camera_jpeg,
    decode_jpeg,
    jpeg_bytes,
    sample_rng,
    vote,
)
from fusionedge.manifest import Record, read_manifest
from fusionedge.preprocess import read_audio, read_image, resample, to_mono_float32
from fusionedge.runtime import Predictor

SEED = 0
SEGMENT_S = 2.0  # the utterance lies anywhere in these seconds
TAIL_S = 0.5  # then noise only, the card still up
SETTINGS = LiveSettings(stream_s_range=(SEGMENT_S, SEGMENT_S), snr_db_range=(20.0, 30.0))
# Judged lines may come this much after the last window that holds the whole event: the
# pipe source delivers within tens of ms, so this is generous. Wider, the vote would count
# windows with part of the utterance, which a tiny model misjudges (see above).
LATENCY_S = 0.15
MIN_LINES = 3  # per segment; ~6 expected at 30 fps
TOLERANCE = 0.10  # live accuracy may be this much below offline accuracy
STARTUP_S = 60.0  # for the run to show both inputs (model load, camera and mic opening)


# ---------------------------------------------------------------------- the scene


@dataclass(frozen=True)
class Segment:
    """One sample's stretch of the scene; times in seconds from the start of playback."""

    record: Record
    jpeg: bytes
    pcm: np.ndarray  # float32 at the microphone's rate, SEGMENT_S (+ a frame) + TAIL_S
    start: float
    end: float
    event: tuple[float, float]  # the utterance as the hold test sees it
    snr_db: float


def build_segments(records: list[Record], rate: int, window_s: float) -> list[Segment]:
    segments, start = [], 0.0
    for record in records:
        rng = sample_rng(SEED, record.id)
        jpeg = camera_jpeg(read_image(record.image), rng, SETTINGS)
        data, native = read_audio(record.audio)
        clip = resample(to_mono_float32(data, str(record.audio)), native, rate)
        scene = audio_scene(clip, rate, round(window_s * rate), rng, SETTINGS)
        # The tail: noise at the scene's level (audio_scene's SNR is to the loud part).
        a, b = active_span(clip, rate)
        power = float(np.mean(clip[a:b].astype(np.float64) ** 2)) or 1e-12
        sigma = math.sqrt(power / 10 ** (scene.snr_db / 10))
        tail = rng.standard_normal(round(TAIL_S * rate)) * sigma
        pcm = np.concatenate([scene.stream, tail.astype(np.float32)])
        event = (start + scene.event[0] / rate, start + scene.event[1] / rate)
        end = start + len(pcm) / rate
        segments.append(Segment(record, jpeg, pcm, start, end, event, scene.snr_db))
        start = end
    return segments


def judged_span(segment: Segment, window_s: float) -> tuple[float, float]:
    """[lo, hi) of the t (from playback start) of the lines that vote for the segment."""
    lo = max(segment.start, segment.event[1])
    hi = min(segment.end, segment.event[0] + window_s + LATENCY_S)
    return lo, hi


class SceneMjpegServer(PacedMjpegServer):
    """A black frame before play(), then each segment's JPEG for its stretch, the last
    one after the scene."""

    def __init__(self, segments: list[Segment], fps: float) -> None:
        super().__init__(fps=fps)
        self.segments = segments
        black = np.zeros_like(decode_jpeg(segments[0].jpeg))
        self.black = jpeg_bytes(black, 90)
        self.t0: float | None = None

    def current(self) -> bytes:
        if self.t0 is None:
            return self.black
        elapsed = time.monotonic() - self.t0
        for segment in self.segments:
            if elapsed < segment.end:
                return segment.jpeg
        return self.segments[-1].jpeg


# ---------------------------------------------------------------------- the run


@dataclass
class ScoredRun:
    returncode: int
    stderr: str
    lines: list[dict]
    t0: float
    segments: list[Segment]
    window_s: float
    labels: tuple[str, ...]


@pytest.fixture(scope="module")
def scored(live_model: Path, live_data: Path, virtual_mic: VirtualMic) -> Iterator[ScoredRun]:
    with Predictor.from_path(live_model, providers="cpu", threads=1) as predictor:
        spec = predictor.spec
    window_s = spec.audio.num_samples / spec.audio.sample_rate
    records = [r for r in read_manifest(live_data).split("test") if r.image and r.audio]
    segments = build_segments(records, virtual_mic.rate, window_s)
    scene_s = segments[-1].end
    server = SceneMjpegServer(segments, SETTINGS.fps).start()
    player = FifoPlayer(
        virtual_mic.fifo, virtual_mic.rate, np.concatenate([s.pcm for s in segments])
    )
    run = LiveRun(
        live_model,
        server.url,
        virtual_mic,
        *("--providers", "cpu"),
        # A safety net only: SIGINT ends the run once the scene is over.
        *("--duration", str(STARTUP_S + scene_s + 30)),
    )
    lines = run.lines
    try:
        with run:
            assert wait_for(run.both_present, STARTUP_S), (run.proc.poll(), lines[-3:])
            t0 = time.monotonic()
            server.t0 = t0
            player.play(t0)
            # Until the last line is about a moment after the scene (or the run died).
            over = wait_for(
                lambda: (
                    run.proc.poll() is not None or (lines and lines[-1]["t"] - t0 > scene_s + 0.5)
                ),
                scene_s + 30,
            )
            assert over and run.proc.poll() is None, (run.proc.poll(), run.stderr[-3000:])
            run.wait(timeout=30, interrupt=True)
    finally:
        player.close()
        server.kill()
    yield ScoredRun(
        run.proc.returncode, run.stderr, lines, t0, segments, window_s, tuple(spec.labels)
    )


def test_live_accuracy_is_within_ten_points_of_offline(scored: ScoredRun, live_model: Path) -> None:
    assert scored.returncode == 0, scored.stderr[-3000:]
    assert "Traceback" not in scored.stderr, scored.stderr[-3000:]
    labels = scored.labels
    with Predictor.from_path(live_model, providers="cpu", threads=1) as predictor:
        offline = [
            predictor.predict(image=s.record.image, audio=s.record.audio).label
            for s in scored.segments
        ]
    live, rows = [], []
    for segment, off in zip(scored.segments, offline, strict=True):
        lo, hi = judged_span(segment, scored.window_s)
        voters = [
            x
            for x in scored.lines
            if x["present"]["image"] and x["present"]["audio"] and lo <= x["t"] - scored.t0 < hi
        ]
        assert len(voters) >= MIN_LINES, (segment.record.id, lo, hi, len(voters))
        index = np.array([labels.index(x["label"]) for x in voters])
        scores = np.array([[x["scores"][label] for label in labels] for x in voters])
        live.append(labels[vote(index, scores)])
        counts = {labels[i]: int(c) for i, c in enumerate(np.bincount(index)) if c}
        rows.append(
            f"{segment.record.id} {segment.record.label:>5}: offline {off:>5}, "
            f"live {live[-1]:>5} (lines {counts})"
        )
    truth = [s.record.label for s in scored.segments]
    n = len(truth)
    live_acc = sum(p == t for p, t in zip(live, truth, strict=True)) / n
    offline_acc = sum(p == t for p, t in zip(offline, truth, strict=True)) / n
    detail = "\n".join([*rows, f"live {live_acc:.3f}, offline {offline_acc:.3f}, n {n}"])
    print(f"\n{detail}")
    # The comparison means something only if the model is well above chance offline.
    assert offline_acc >= 2 / len(labels), detail
    assert live_acc >= offline_acc - TOLERANCE - 1e-9, detail
