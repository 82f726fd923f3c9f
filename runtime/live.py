"""The live loop: newest frame + the audio window ending at the same moment -> a prediction.

It never queues work. Each turn takes the newest camera frame (frames that arrived while
the model ran are dropped and counted), cuts the audio window that ends at that frame's
capture time, and runs the Predictor. A modality whose newest input is older than the
staleness limit is marked missing (present = False), so a covered, unplugged or frozen
camera, or a stalled microphone, degrades the prediction instead of stopping it.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fusionedge.runtime.audio_sources import AudioSource
from fusionedge.runtime.camera import CameraSource, Frame
from fusionedge.runtime.predictor import Predictor
from fusionedge.runtime.ring import AudioWindow
from fusionedge.runtime.streaming import StreamingEncoder

log = logging.getLogger(__name__)
NS = 1_000_000_000


@dataclass(frozen=True)
class LiveOptions:
    """How the loop paces and judges its inputs.

    Attributes:
        stale_ms: An input older than this (capture time to now) counts as missing.
        rate_hz: At most this many predictions per second. None: once per new camera
            frame, as fast as the model allows, and at least idle_hz (turns between the
            frames of a slow camera reuse its last frame with the newest audio).
        idle_hz: Predictions per second when no camera frame drives the loop (no camera,
            or a camera that stopped delivering) and rate_hz is None.
        smoothing: Exponential smoothing of scores over time, 0 (off) to <1 (heavy).
        startup_s: At the start, wait up to this long for the first frame and audio, so
            the first result is not a prediction from nothing while devices open.
        audio_hop_ms: With a split model, the audio encoder runs again once the audio has
            moved on by this much (a single-file model encodes every turn's window).
    """

    stale_ms: float = 500.0
    rate_hz: float | None = None
    idle_hz: float = 10.0
    smoothing: float = 0.0
    startup_s: float = 3.0
    audio_hop_ms: float = 100.0

    def __post_init__(self) -> None:
        def positive(x: float | None) -> bool:
            return x is not None and math.isfinite(x) and x > 0

        rate_ok = self.rate_hz is None or positive(self.rate_hz)
        smoothing_ok = math.isfinite(self.smoothing) and 0 <= self.smoothing < 1
        if not (
            positive(self.stale_ms)
            and rate_ok
            and positive(self.idle_hz)
            and smoothing_ok
            and positive(self.startup_s)
            and positive(self.audio_hop_ms)
        ):
            raise ValueError(
                f"stale_ms, rate_hz, idle_hz, startup_s and audio_hop_ms must be positive "
                f"finite numbers and smoothing in [0, 1); got {self}"
            )


@dataclass(frozen=True)
class LiveResult:
    """One live prediction.

    Attributes:
        t: Capture time, in seconds of time.monotonic(), of the inputs the prediction is
            about (the frame's, else the audio window's end, else the loop's clock).
        label: The top label (None for regression).
        scores: Score per label, smoothed when smoothing is on.
        present: Which modalities the model was given.
        input_age_ms: Age of each live input when the model started (None if absent).
        latency_ms: "capture_to_result" (from t to the result), "preprocess",
            "inference" and "total" (the loop's own turn).
        dropped_frames: Frames captured but never used, since the start.
        overflows: Microphone overflows since the start.
        frame: The BGR frame that was used (for drawing), None without one.
    """

    t: float
    label: str | None
    scores: dict[str, float]
    present: dict[str, bool]
    input_age_ms: dict[str, float | None]
    latency_ms: dict[str, float]
    dropped_frames: int
    overflows: int
    frame: np.ndarray | None = field(default=None, repr=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        """The headless output line: everything but the frame."""
        return {
            "t": self.t,
            "label": self.label,
            "scores": self.scores,
            "latency_ms": self.latency_ms["capture_to_result"],
            "latency_breakdown_ms": self.latency_ms,
            "input_age_ms": self.input_age_ms,
            "present": self.present,
            "dropped_frames": self.dropped_frames,
            "overflows": self.overflows,
        }


class LiveRunner:
    """Runs a Predictor on live sources; iterate it, or give it a callback.

    Args:
        predictor: An open Predictor (for live use, spinning=False and few threads).
        camera: A started CameraSource, or None.
        audio: A started AudioSource (MicrophoneSource, WavFileSource), or None.
        text: A fixed text, or a callable returning the current text (None = no text).
        options: Pacing, staleness and smoothing.
    """

    def __init__(
        self,
        predictor: Predictor,
        camera: CameraSource | None = None,
        audio: AudioSource | None = None,
        text: str | Callable[[], str | None] | None = None,
        options: LiveOptions | None = None,
    ) -> None:
        spec = predictor.spec
        if camera is not None and "image" not in spec.modalities:
            raise ValueError("a camera was given but the model takes no image")
        if audio is not None and "audio" not in spec.modalities:
            raise ValueError("audio was given but the model takes no audio")
        if text is not None and "text" not in spec.modalities:
            raise ValueError("text was given but the model takes no text")
        self.predictor, self.camera, self.audio = predictor, camera, audio
        self.text = text
        # Inputs are prepared as they arrive, not on the turn: each camera frame on the
        # capture thread (by frame_preparer; a frame it prepared is used as is), the audio
        # resampled block by block into a ring at the model's rate. The turn then only
        # copies a window and runs the model.
        self.frame_preparer = self._prepare_frame
        if camera is not None:
            camera.prepare_frames(self.frame_preparer)
        self._audio_ring = None if audio is None else audio.ring_at(spec.audio.sample_rate)
        self._tokens: tuple[str, np.ndarray] | None = None  # the last text and its tokens
        self.options = options or LiveOptions()
        self.results = 0
        self._smoothed: np.ndarray | None = None
        self._stale_ns = self.options.stale_ms * 1e6
        # A split model gets cached per-modality embeddings (runtime/streaming.py).
        self.streaming = (
            StreamingEncoder(predictor, self.options.audio_hop_ms / 1e3)
            if predictor.split is not None
            else None
        )
        # Index-cut audio windows need a separate front end (else each hop encodes a window
        # cut by time, whole); the ring is at the model's rate whatever the device's.
        self._hop_samples = 0
        split = predictor.split
        if self.streaming is not None and audio is not None and split.frontend is not None:
            hop = spec.audio.hop_length
            steps = round(self.options.audio_hop_ms / 1e3 * spec.audio.sample_rate / hop)
            self._hop_samples = max(1, steps) * hop
        self._stop = threading.Event()

    def stop(self) -> None:
        """Ends iteration after the current turn (safe from any thread)."""
        self._stop.set()

    def __iter__(self) -> Iterator[LiveResult]:
        rate = self.options.rate_hz
        min_period = 1.0 / rate if rate else 0.0
        idle_period = 1.0 / (rate or self.options.idle_hz)
        self._wait_for_first_inputs()
        last = time.monotonic() - idle_period
        while not self._stop.is_set():
            self._stop.wait(max(0.0, last + min_period - time.monotonic()))
            frame = None
            if self.camera is not None:
                # Wait for a new frame, but no longer than the idle period: a dead camera
                # must not stop predictions from the other inputs.
                frame = self.camera.take(timeout=max(0.0, last + idle_period - time.monotonic()))
            else:
                self._stop.wait(max(0.0, last + idle_period - time.monotonic()))
            if self._stop.is_set():
                return
            last = time.monotonic()
            yield self.step(frame)

    def _wait_for_first_inputs(self) -> None:
        deadline = time.monotonic() + self.options.startup_s
        while not self._stop.is_set() and time.monotonic() < deadline:
            camera_ready = self.camera is None or self.camera.latest() is not None
            audio_ready = self._audio_ring is None or self._audio_ring.end_ns is not None
            if camera_ready and audio_ready:
                return
            self._stop.wait(0.01)

    def run(self, callback: Callable[[LiveResult], Any], duration_s: float | None = None) -> int:
        """Calls callback with each result until stop() or duration_s; returns the count."""
        end = None if duration_s is None else time.monotonic() + duration_s
        count = 0
        for result in self:
            callback(result)
            count += 1
            if end is not None and time.monotonic() >= end:
                break
        return count

    def step(self, frame=None) -> LiveResult:
        """One turn with a newly taken frame, or None.

        Without a new frame (a camera slower than idle_hz, or none) the turn is about the
        present: the newest audio, and the camera's last frame while it is still fresh.
        With a split model, each encoder runs only when its input changed (see
        runtime/streaming.py); the audio window then moves in hops of audio_hop_ms.
        """
        t0 = time.monotonic_ns()
        stale = self.options.stale_ms * 1e6
        new_frame = frame is not None
        if frame is None and self.camera is not None:
            frame = self.camera.latest()
        image_age = None if frame is None else t0 - frame.t_ns
        use_frame = frame is not None and image_age <= stale
        anchor = frame.t_ns if use_frame and new_frame else t0
        text = self.text() if callable(self.text) else self.text
        # Blank text is absent, as in a manifest and in Predictor.prepare.
        text = text if text is not None and text.strip() else None
        if self.streaming is None:
            turn = self._turn_single(frame if use_frame else None, anchor, text)
        else:
            turn = self._turn_streaming(frame if use_frame else None, anchor, text)
        t2 = time.monotonic_ns()
        spec = self.predictor.spec
        row = turn.scores
        if self.options.smoothing and self._smoothed is not None:
            row = self.options.smoothing * self._smoothed + (1 - self.options.smoothing) * row
        self._smoothed = row
        by_label = {label: float(s) for label, s in zip(spec.labels, row, strict=True)}
        label = None if spec.task == "regression" else spec.labels[int(np.argmax(row))]
        self.results += 1
        return LiveResult(
            t=turn.anchor / NS,
            label=label,
            scores=by_label,
            present=turn.present,
            input_age_ms={
                "image": None if image_age is None else image_age / 1e6,
                "audio": None if turn.audio_age is None else turn.audio_age / 1e6,
            },
            latency_ms={
                "capture_to_result": (t2 - turn.anchor) / 1e6,
                "preprocess": (t2 - t0 - turn.inference_ns) / 1e6,
                "inference": turn.inference_ns / 1e6,
                "total": (t2 - t0) / 1e6,
            },
            dropped_frames=self.camera.stats.dropped if self.camera else 0,
            overflows=self.audio.stats.overflows if self.audio else 0,
            frame=frame.image if use_frame else None,
        )

    def _live_audio(self, anchor: int) -> tuple[AudioWindow | None, bool, int | None]:
        """The model's audio window ending at anchor, whether the microphone is live, and
        the window's age. The clock is read after the ring, so no block can land in
        between and make an age negative."""
        spec = self.predictor.spec
        newest = self._audio_ring.end_ns
        window = self.audio.window(spec.audio.num_samples, spec.audio.sample_rate, anchor)
        now = time.monotonic_ns()
        # Live means the microphone delivered recently; the age is that of the window.
        live = window is not None and newest is not None and now - newest <= self._stale_ns
        return window, live, None if window is None else now - window.end_ns

    def _turn_single(self, frame, anchor: int, text: str | None) -> _Turn:
        spec = self.predictor.spec
        window, use_audio, audio_age = None, False, None
        if self.audio is not None:
            window, use_audio, audio_age = self._live_audio(anchor)
        if frame is None and use_audio:
            anchor = window.end_ns
        # The window is the model's input as it is: its rate, its length.
        inputs = dict.fromkeys(spec.modalities)
        inputs.update(
            image=None if frame is None else self._image_of(frame),
            audio=window.samples if use_audio else None,
            text=None if text is None else self._tokens_of(text),
        )
        batch = self.predictor.stack([{m: inputs[m] for m in spec.modalities}])
        t1 = time.monotonic_ns()
        scores, _ = self.predictor.run(batch)
        present = {m: bool(p) for m, p in zip(spec.modalities, batch["present"][0], strict=True)}
        return _Turn(scores[0], present, anchor, audio_age, time.monotonic_ns() - t1)

    def _turn_streaming(self, frame, anchor: int, text: str | None) -> _Turn:
        streaming, predictor = self.streaming, self.predictor
        spent = sum(streaming.stats.inference_ns.values())
        present = dict.fromkeys(predictor.spec.modalities, False)
        if frame is not None:
            streaming.update_image(frame.t_ns, lambda: self._image_of(frame))
            present["image"] = True
        audio_age = None
        if self.audio is not None and self._hop_samples:
            audio_age, present["audio"] = self._stream_audio_by_index()
            if frame is None and present["audio"]:
                anchor = streaming.audio_end_ns()
        elif self.audio is not None:
            newest = self._audio_ring.end_ns
            cached_end = streaming.audio_end_ns()
            if newest is not None and streaming.audio_due(min(anchor, newest)):
                window, live, audio_age = self._live_audio(anchor)
                if window is not None:
                    streaming.update_audio(window.end_ns, lambda: window.samples)
                present["audio"] = live
            elif cached_end is not None:
                now = time.monotonic_ns()
                audio_age = now - cached_end
                present["audio"] = newest is not None and now - newest <= self._stale_ns
            if frame is None and present["audio"]:
                anchor = streaming.audio_end_ns()
        if text is not None:
            streaming.update_text(text, lambda: self._tokens_of(text))
            present["text"] = True
        scores, _ = streaming.scores(present)
        inference = sum(streaming.stats.inference_ns.values()) - spent
        return _Turn(scores, present, anchor, audio_age, inference)

    def _prepare_frame(self, image: np.ndarray) -> np.ndarray:
        """A camera frame -> the model's image (run on the camera's capture thread)."""
        return self.predictor.prepare(image=image, color_order="bgr")["image"]

    def _image_of(self, frame: Frame) -> np.ndarray:
        """The frame as the model takes it: prepared on arrival, or now (a frame given to
        step() by hand, or one the capture thread could not prepare)."""
        if frame.prepared is not None and frame.prepared_by is self.frame_preparer:
            return frame.prepared
        return self._prepare_frame(frame.image)

    def _tokens_of(self, text: str) -> np.ndarray:
        """The text's tokens, encoded again only when the text changes."""
        if self._tokens is None or self._tokens[0] != text:
            self._tokens = (text, self.predictor.prepare(text=text)["text"])
        return self._tokens[1]

    def _stream_audio_by_index(self) -> tuple[int | None, bool]:
        """Audio for a split model with its own log-mel front end: windows cut by sample
        index of the ring at the model's rate, a whole number of DFT hops apart, so
        each hop computes the log-mel of the new audio only. The window ends at the last
        hop boundary (up to audio_hop_ms before the newest sample), not at the frame's
        capture time. Returns the cached window's age and whether the microphone is live.
        """
        streaming, ring = self.streaming, self._audio_ring
        n = self.predictor.spec.audio.num_samples
        newest, written = ring.end_ns, ring.written
        if newest is None:
            return None, False
        last = streaming.audio_end_index()
        if last is None or written - last >= self._hop_samples:
            # After a gap longer than the window (a stalled microphone) start afresh at the
            # newest sample; otherwise move on by whole hops.
            fresh = last is None or written - last >= n
            end = (
                written
                if fresh
                else last + (written - last) // self._hop_samples * self._hop_samples
            )
            window = ring.window_at(n, end)
            if window is not None:
                streaming.update_audio_window(end, window.samples, window.end_ns)
        now = time.monotonic_ns()
        cached = streaming.audio_end_ns()
        return (None if cached is None else now - cached), now - newest <= self._stale_ns


@dataclass
class _Turn:
    """What one turn's model run gave, before smoothing and bookkeeping."""

    scores: np.ndarray
    present: dict[str, bool]
    anchor: int
    audio_age: int | None
    inference_ns: int
