"""Live-condition evaluation: the `live` key of `fusionedge eval --live`.

Models trained on files meet something else live: the image that filled the training
picture sits somewhere inside a camera frame, smaller, on a background, JPEG-compressed;
the utterance that the training clip centred in its window arrives anywhere in a sliding
window, over background noise. This module rebuilds each test sample as the live loop
(runtime/live.py) would see it and scores it with a backend's function, decoded samples
-> scores (PyTorch for run folders, ONNX Runtime for model files), as robustness.py does.

Per sample, with a generator seeded by (seed, the sample's id):
- frame: the image scaled so its longer side spans 40-100 % of a 640x480 frame's shorter
  side, pasted at a random place on a background (flat colour + gradient + noise), JPEG
  round-tripped at quality 60-90, then prepared by preprocess.prepare_image(frame, spec,
  "bgr"), the function the Predictor applies to a camera frame. The scene is still: one
  frame per sample, used by every turn.
- stream: the utterance (the clip at the model's rate, trimmed to its loud part) at a
  random offset in 2-3 s of white noise at an SNR of 10-30 dB to the utterance.
- turns: one per camera frame at 30 fps; each turn's audio window is the model's
  num_samples ending at the frame (the loop's `window(num_samples, rate, frame time)`).
  For a split model the window is cut again only once the frame has moved a hop
  (audio_hop_ms) past the last cut, as StreamingEncoder.audio_due decides.
- scores are smoothed across the turns of one sample as LiveOptions.smoothing does.

A turn's window "holds the event" when the whole utterance lies inside it. An utterance
longer than a window less one gap between cuts is cut to its centre for that test (the
part a centre-cropped training window showed), so every sample has at least one such turn.

Figures, as fractions like the other eval keys (a turn is a "window" in the JSON):
`accuracy` over every turn of every sample; `event_accuracy` over samples, each voted by
the majority label of its event turns; `offline_accuracy` of the same samples decoded as
plain eval decodes them, through the same backend; `gap` = offline_accuracy -
event_accuracy (in [-1, 1]; positive when live loses).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from fusionedge.arrays import SampleArrays, encode_targets
from fusionedge.evaluation import split_records
from fusionedge.manifest import Record
from fusionedge.preprocess import (
    fit_window,
    prepare_image,
    read_audio,
    read_image,
    resample,
    resize_image,
    to_mono_float32,
)
from fusionedge.spec import ModelSpec
from fusionedge.tokenizer import Tokenizer

ArraysScoreFn = Callable[[SampleArrays], np.ndarray]
# Turns scored per backend call: bounds memory whatever the stream's length.
BATCH_TURNS = 64
# Loudness frames for trimming a clip to its utterance, and the level, relative to the
# loudest frame, below which a frame counts as silence (-20 dB).
ACTIVE_FRAME_S = 0.01
ACTIVE_LEVEL = 0.1


def turn_clock(spec: ModelSpec) -> tuple[int, int]:
    """(rate, window samples) of the turns' audio. A model without audio still has turns,
    one per camera frame; a nominal 1 s window at 16 kHz only sets how many there are."""
    return (spec.audio.sample_rate, spec.audio.num_samples) if spec.audio else (16000, 16000)


@dataclass(frozen=True)
class LiveSettings:
    """How the live scenes are drawn; reported in the JSON as they were used.

    Attributes:
        frame_size: Camera frame (width, height).
        fps: Camera frames (and so turns) per second.
        scale_range: The image's longer side as a fraction of the frame's shorter side.
        jpeg_quality_range: JPEG quality, inclusive.
        snr_db_range: Utterance-to-noise ratio in dB.
        stream_s_range: Seconds of audio per sample (longer when the clip needs it).
        smoothing: Score smoothing across turns, as LiveOptions.smoothing (0 = off, its
            default).
        audio_hop_ms: A split model's audio hop (LiveOptions.audio_hop_ms); None for models
            that encode every turn's window.
    """

    frame_size: tuple[int, int] = (640, 480)
    fps: float = 30.0
    scale_range: tuple[float, float] = (0.4, 1.0)
    jpeg_quality_range: tuple[int, int] = (60, 90)
    snr_db_range: tuple[float, float] = (10.0, 30.0)
    stream_s_range: tuple[float, float] = (2.0, 3.0)
    smoothing: float = 0.0
    audio_hop_ms: float | None = None


@dataclass(frozen=True)
class Placement:
    """Where the image was pasted in the frame, in pixels."""

    top: int
    left: int
    height: int
    width: int


def sample_rng(seed: int, sample_id: str) -> np.random.Generator:
    """A sample's own generator: its scene does not change when other lines are added."""
    return np.random.default_rng([seed, zlib.crc32(sample_id.encode("utf-8"))])


# ---------------------------------------------------------------------------------- frame


def background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A BGR uint8 wall: a flat colour, a linear gradient across it, and sensor noise."""
    colour = rng.uniform(0, 255, 3)
    angle, amplitude = rng.uniform(0, 2 * np.pi), rng.uniform(0, 60)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    ramp = (np.cos(angle) * x / width + np.sin(angle) * y / height) * amplitude
    noise = rng.normal(0, rng.uniform(2, 10), (height, width, 3)).astype(np.float32)
    wall = colour[None, None, :].astype(np.float32) + ramp[..., None] + noise
    return np.clip(np.rint(wall), 0, 255).astype(np.uint8)


def compose_frame(
    rgb: np.ndarray, rng: np.random.Generator, settings: LiveSettings
) -> tuple[np.ndarray, Placement]:
    """The image pasted into a camera-sized BGR frame at a drawn scale and place."""
    width, height = settings.frame_size
    scale = rng.uniform(*settings.scale_range)
    h0, w0 = rgb.shape[:2]
    longer = max(1, round(scale * min(width, height)))
    h = min(height, max(1, round(h0 * longer / max(h0, w0))))
    w = min(width, max(1, round(w0 * longer / max(h0, w0))))
    top, left = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
    frame = background(rng, width, height)
    shrinking = h * w < h0 * w0
    pasted = cv2.resize(
        rgb, (w, h), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    )
    frame[top : top + h, left : left + w] = cv2.cvtColor(pasted, cv2.COLOR_RGB2BGR)
    return frame, Placement(top, left, h, w)


def jpeg_bytes(bgr: np.ndarray, quality: int) -> bytes:
    """A BGR frame as the JPEG a camera delivering MJPEG (most USB webcams) sends."""
    ok, data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("cv2 could not JPEG-encode a frame")
    return data.tobytes()


def decode_jpeg(data: bytes) -> np.ndarray:
    """BGR uint8 from JPEG bytes."""
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)


def jpeg_roundtrip(bgr: np.ndarray, quality: int) -> np.ndarray:
    """What a camera delivering MJPEG (most USB webcams) hands over."""
    return decode_jpeg(jpeg_bytes(bgr, quality))


def camera_jpeg(rgb: np.ndarray, rng: np.random.Generator, settings: LiveSettings) -> bytes:
    """The JPEG the camera would send: the image composited into a frame, encoded at a
    drawn quality (the bytes an MJPEG stream carries; the live tests serve them)."""
    frame, _ = compose_frame(rgb, rng, settings)
    lo, hi = settings.jpeg_quality_range
    return jpeg_bytes(frame, int(rng.integers(lo, hi + 1)))


def camera_frame(rgb: np.ndarray, rng: np.random.Generator, settings: LiveSettings) -> np.ndarray:
    """The BGR frame the camera would deliver: composited, then JPEG round-tripped."""
    return decode_jpeg(camera_jpeg(rgb, rng, settings))


# ---------------------------------------------------------------------------------- audio


def active_span(clip: np.ndarray, rate: int) -> tuple[int, int]:
    """[start, end) of the clip's utterance: first to last 10 ms frame within 20 dB of
    the loudest one (files pad utterances with silence or room noise; that is no event)."""
    step = max(1, round(ACTIVE_FRAME_S * rate))
    frames = len(clip) // step
    if frames == 0:
        return 0, len(clip)
    rms = np.sqrt(np.mean(clip[: frames * step].reshape(frames, step) ** 2, axis=1))
    loud = np.flatnonzero(rms >= ACTIVE_LEVEL * rms.max())
    if rms.max() == 0 or not len(loud):
        return 0, len(clip)
    end = len(clip) if loud[-1] == frames - 1 else (loud[-1] + 1) * step
    return int(loud[0] * step), int(end)


def frame_ends(num_samples: int, rate: int, fps: float, min_samples: int) -> np.ndarray:
    """Stream sample index of each camera frame: the first frame comes once a whole window
    has been heard, then every 1/fps s, until the stream holds min_samples."""
    frames = max(0, math.ceil((min_samples - num_samples) * fps / rate))
    return num_samples + np.rint(np.arange(frames + 1) * rate / fps).astype(np.int64)


def audio_cuts(ends: np.ndarray, hop: int) -> np.ndarray:
    """The end of the audio window each turn uses: every frame's own (hop 0), or, for a
    split model, the last cut until a frame is a hop past it (StreamingEncoder.audio_due)."""
    cuts = ends.copy()
    for k in range(1, len(ends)):
        cuts[k] = ends[k] if ends[k] - cuts[k - 1] >= hop else cuts[k - 1]
    return cuts


@dataclass
class AudioScene:
    """One sample's stream and turns.

    Attributes:
        stream: float32 PCM at the model's rate (None: the sample has no audio).
        cuts: Per turn, the stream index at which its audio window ends.
        event: [start, end) of the utterance as the hold test sees it (None: no audio).
        offset: Where the utterance (its loud part) starts in the stream.
        snr_db: The drawn utterance-to-noise ratio.
    """

    stream: np.ndarray | None
    cuts: np.ndarray
    event: tuple[int, int] | None
    offset: int
    snr_db: float

    def windows(self, num_samples: int, turns: slice) -> np.ndarray:
        """float32 [T, num_samples]: the audio windows of some turns (a copy)."""
        assert self.stream is not None
        return np.stack([self.stream[e - num_samples : e] for e in self.cuts[turns]])

    def holds_event(self, num_samples: int) -> np.ndarray:
        """bool per turn: its window holds the whole event (every turn without audio)."""
        if self.event is None:
            return np.ones(len(self.cuts), dtype=bool)
        start, end = self.event
        return (self.cuts - num_samples <= start) & (self.cuts >= end)


def audio_scene(
    clip: np.ndarray | None,
    rate: int,
    num_samples: int,
    rng: np.random.Generator,
    settings: LiveSettings,
) -> AudioScene:
    """The stream of one sample (clip: mono float32 at the model's rate, or None)."""
    hop = round((settings.audio_hop_ms or 0) / 1e3 * rate)
    # Cuts are at most one hop plus one frame apart; the event must fit in a window less
    # that gap, or no turn might hold it (see the module docstring).
    gap = hop + math.ceil(rate / settings.fps)
    seconds = rng.uniform(*settings.stream_s_range)
    if clip is None:
        ends = frame_ends(num_samples, rate, settings.fps, round(seconds * rate))
        return AudioScene(None, audio_cuts(ends, hop), None, 0, math.inf)
    a, b = active_span(clip, rate)
    voice = clip[a:b]
    ends = frame_ends(num_samples, rate, settings.fps, max(round(seconds * rate), len(voice) + hop))
    cuts = audio_cuts(ends, hop)
    # The last cut trails the last frame by under a hop; the utterance ends before it.
    offset = int(rng.integers(0, cuts[-1] - len(voice) + 1))
    snr = float(rng.uniform(*settings.snr_db_range))
    power = float(np.mean(voice.astype(np.float64) ** 2)) or 1e-12
    noise = rng.standard_normal(int(ends[-1])) * math.sqrt(power / 10 ** (snr / 10))
    noise[offset : offset + len(voice)] += voice
    stream = np.clip(noise, -1.0, 1.0).astype(np.float32)
    held = min(len(voice), max(1, num_samples - gap))
    start = offset + (len(voice) - held) // 2
    return AudioScene(stream, cuts, (start, start + held), offset, snr)


# ---------------------------------------------------------------------------------- samples


@dataclass
class LiveSample:
    """One sample's model inputs, offline (decoded as plain eval decodes it) and live.

    Attributes:
        offline_image, offline_audio: The file-decoded model inputs (None where absent).
        frame: The camera frame after the runtime's preprocessing (None: no image).
        tokens: The text's tokens, the same offline and live (None: no text).
        scene: The audio stream and the turns.
    """

    offline_image: np.ndarray | None
    offline_audio: np.ndarray | None
    frame: np.ndarray | None
    tokens: np.ndarray | None
    scene: AudioScene


def build_sample(
    record: Record,
    spec: ModelSpec,
    rng: np.random.Generator,
    settings: LiveSettings,
    tokenizer: Tokenizer | None = None,
) -> LiveSample:
    """Decodes one record once and builds both its offline inputs and its live scene."""
    offline_image = frame = None
    if spec.image is not None and record.image is not None:
        rgb = read_image(record.image)
        offline_image = resize_image(rgb, spec.image)  # = preprocess.load_image
        frame = prepare_image(camera_frame(rgb, rng, settings), spec.image, "bgr")
    clip = offline_audio = None
    rate, n = turn_clock(spec)
    if spec.audio is not None and record.audio is not None:
        data, native = read_audio(record.audio)
        # The stream is built at the model's rate: the live loop resamples the microphone
        # to it, and doing it once per clip keeps the utterance's samples exact.
        clip = resample(to_mono_float32(data, str(record.audio)), native, rate)
        offline_audio = fit_window(clip, n)  # = preprocess.load_audio
    tokens = None
    if tokenizer is not None and record.text is not None:
        tokens = tokenizer.encode(record.text)
    scene = audio_scene(clip, rate, n, rng, settings)
    return LiveSample(offline_image, offline_audio, frame, tokens, scene)


def model_rows(
    spec: ModelSpec,
    rows: int,
    image: np.ndarray | None,
    audio: np.ndarray | None,
    tokens: np.ndarray | None,
) -> SampleArrays:
    """A batch of `rows` model inputs; each input is one row (repeated) or `rows` rows,
    and a None input is absent (zeros, present = False) as in load_arrays."""
    given = {"image": image, "audio": audio, "text": tokens}
    present = np.array([[given[m] is not None for m in spec.modalities]] * rows, dtype=bool)

    def fill(value: np.ndarray | None, shape: tuple[int, ...], dtype: type) -> np.ndarray:
        out = np.zeros((rows, *shape), dtype=dtype)
        if value is not None:
            out[:] = value
        return out

    return SampleArrays(
        ids=[""] * rows,
        present=present,
        image=None
        if spec.image is None
        else fill(image, (spec.image.height, spec.image.width, 3), np.uint8),
        audio=None if spec.audio is None else fill(audio, (spec.audio.num_samples,), np.float32),
        tokens=None if spec.text is None else fill(tokens, (spec.text.max_length,), np.int64),
    )


def score_sample(
    sample: LiveSample, spec: ModelSpec, score: ArraysScoreFn, batch: int = BATCH_TURNS
) -> tuple[np.ndarray, np.ndarray]:
    """Scores offline [C] and per turn [T, C] (before smoothing), `batch` turns a call."""
    offline = score(model_rows(spec, 1, sample.offline_image, sample.offline_audio, sample.tokens))[
        0
    ]
    scene, turns = sample.scene, []
    for start in range(0, len(scene.cuts), batch):
        part = slice(start, min(len(scene.cuts), start + batch))
        audio = None
        if scene.stream is not None and spec.audio is not None:
            audio = scene.windows(spec.audio.num_samples, part)
        rows = part.stop - part.start
        turns.append(score(model_rows(spec, rows, sample.frame, audio, sample.tokens)))
    return np.asarray(offline), np.concatenate(turns)


def smooth(scores: np.ndarray, smoothing: float) -> np.ndarray:
    """The live loop's exponential smoothing over consecutive turns (LiveRunner.step)."""
    out = np.array(scores, dtype=np.float64)
    for k in range(1, len(out)):
        out[k] = smoothing * out[k - 1] + (1 - smoothing) * out[k]
    return out


def vote(labels: np.ndarray, scores: np.ndarray) -> int:
    """The most frequent label; a tie goes to the tied label with the higher mean score."""
    counts = np.bincount(labels, minlength=scores.shape[1])
    mean = scores.mean(axis=0)
    return int(np.argmax(np.where(counts == counts.max(), mean, -np.inf)))


# ---------------------------------------------------------------------------------- report


@dataclass
class _Tally:
    samples: int = 0
    offline_right: int = 0
    turns: int = 0
    turns_right: int = 0
    event_turns: int = 0
    voted: int = 0
    voted_right: int = 0

    def add(self, target: int, offline: np.ndarray, turns: np.ndarray, held: np.ndarray) -> None:
        labels = turns.argmax(axis=1)
        self.samples += 1
        self.offline_right += int(offline.argmax() == target)
        self.turns += len(labels)
        self.turns_right += int((labels == target).sum())
        self.event_turns += int(held.sum())
        if held.any():
            self.voted += 1
            self.voted_right += int(vote(labels[held], turns[held]) == target)


def evaluate_live(
    spec: ModelSpec,
    data: str | Path,
    split: str,
    score: ArraysScoreFn,
    seed: int = 0,
    settings: LiveSettings | None = None,
) -> dict[str, Any]:
    """The live object (see the module docstring), one sample at a time.

    Args:
        spec: The model's spec (a multiclass or binary classifier).
        data: Data set folder or manifest.
        split: Split to evaluate ("all" for every line).
        score: Decoded samples -> scores [N, C], as the model's `scores` output.
        seed: Seed of the scenes; the same seed gives the same figures.
        settings: How scenes are drawn (LiveSettings() by default).
    """
    if spec.task not in ("multiclass", "binary"):
        raise ValueError(f"--live scores class labels; a {spec.task} model has none to vote")
    settings = settings or LiveSettings()
    # Lists, not tuples: the object is the same before and after a JSON round trip.
    drawn = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(settings).items()}
    manifest, records = split_records(data, split)
    targets = encode_targets(records, spec, manifest.path)
    tokenizer = Tokenizer(spec.text) if spec.text is not None else None
    _, n = turn_clock(spec)
    tally = _Tally()
    for record, target in zip(records, targets, strict=True):
        sample = build_sample(record, spec, sample_rng(seed, record.id), settings, tokenizer)
        offline, turns = score_sample(sample, spec, score)
        tally.add(
            int(target), offline, smooth(turns, settings.smoothing), sample.scene.holds_event(n)
        )
    offline_accuracy = tally.offline_right / tally.samples
    event_accuracy = tally.voted_right / tally.voted if tally.voted else None
    return {
        "accuracy": tally.turns_right / tally.turns,
        "event_accuracy": event_accuracy,
        "offline_accuracy": offline_accuracy,
        "gap": None if event_accuracy is None else offline_accuracy - event_accuracy,
        "n_samples": tally.samples,
        "n_windows": tally.turns,
        "n_event_windows": tally.event_turns,
        "seed": seed,
        "settings": drawn,
    }


def format_live(live: dict[str, Any]) -> str:
    """The human lines of a live object."""
    s = live["settings"]

    def value(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.4f}"

    return "\n".join(
        [
            f"live: {live['n_samples']} samples, {live['n_windows']} windows "
            f"({s['frame_size'][0]}x{s['frame_size'][1]} JPEG frames at {s['fps']:g} fps, "
            f"SNR {s['snr_db_range'][0]:g}-{s['snr_db_range'][1]:g} dB, seed {live['seed']})",
            f"  {'offline accuracy':<28}{value(live['offline_accuracy'])}",
            f"  {'live accuracy, per window':<28}{value(live['accuracy'])}",
            f"  {'live accuracy, per event':<28}{value(live['event_accuracy'])}"
            f"   (vote over {live['n_event_windows']} windows holding the whole event)",
            f"  {'gap (offline - per event)':<28}{value(live['gap'])}",
        ]
    )
