"""Embeddings cached between turns of a live loop, for split models.

A single-file model recomputes every encoder on every turn: at 30 camera frames per
second the audio encoder runs 30 times a second on windows that moved by 33 ms, and the
text encoder on the same text. With a split model (runtime/split.py) each encoder runs only
when its modality has new data: the image encoder per new frame, the audio encoder when the
audio has moved on by a hop (10 Hz by default), the text encoder when the text changes.
Every turn then runs only the small fusion part on the cached embeddings.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from fusionedge.runtime.predictor import Predictor

NS = 1_000_000_000


@dataclass
class EncoderStats:
    """How often each encoder ran and how long the model's parts took, in nanoseconds."""

    runs: dict[str, int] = field(default_factory=dict)
    reuses: dict[str, int] = field(default_factory=dict)
    inference_ns: dict[str, int] = field(default_factory=dict)
    logmel_frames: int = 0  # log-mel frames computed by a separate audio front end

    def add(self, part: str, ns: int) -> None:
        self.runs[part] = self.runs.get(part, 0) + 1
        self.inference_ns[part] = self.inference_ns.get(part, 0) + ns


@dataclass
class _Cached:
    key: object
    embedding: np.ndarray


class StreamingEncoder:
    """Per-modality embeddings of the newest inputs, recomputed only when they change.

    Args:
        predictor: A Predictor on a split model.
        audio_hop_s: Re-encode audio once its window end has moved by this much.

    Call update_image / update_audio / update_text with each turn's inputs (they encode
    only when needed), then scores(present).
    """

    def __init__(self, predictor: Predictor, audio_hop_s: float = 0.1) -> None:
        if predictor.split is None:
            raise ValueError(
                f"{predictor.path} is a single-file model; streaming with cached "
                "embeddings needs a split model (`fusionedge export --split`)"
            )
        if not audio_hop_s > 0:
            raise ValueError(f"audio_hop_s must be positive, got {audio_hop_s}")
        self.predictor = predictor
        self.hop_ns = round(audio_hop_s * NS)
        self.stats = EncoderStats()
        self._cache: dict[str, _Cached] = {}
        # The log-mel frames of the last audio window and its end (absolute sample index).
        self._mel: np.ndarray | None = None
        self._mel_end: int | None = None

    def _encode(self, modality: str, key: object, make_input: Callable[[], np.ndarray]) -> None:
        cached = self._cache.get(modality)
        if cached is not None and cached.key == key:
            self.stats.reuses[modality] = self.stats.reuses.get(modality, 0) + 1
            return
        x = make_input()[None]
        t0 = time.perf_counter_ns()
        embedding = self.predictor.encode(modality, x)
        self.stats.add(modality, time.perf_counter_ns() - t0)
        self._cache[modality] = _Cached(key, embedding)

    def update_image(self, frame_key: object, make_input: Callable[[], np.ndarray]) -> None:
        """frame_key identifies the frame (its capture time); make_input prepares it."""
        self._encode("image", frame_key, make_input)

    def audio_due(self, end_ns: int) -> bool:
        """Whether audio ending at end_ns is a hop past the window encoded last."""
        cached = self._cache.get("audio")
        return cached is None or abs(end_ns - cached.key) >= self.hop_ns  # type: ignore[operator]

    def audio_end_ns(self) -> int | None:
        """End time of the audio window whose embedding is cached."""
        cached = self._cache.get("audio")
        return None if cached is None else cached.key  # type: ignore[return-value]

    def update_audio(self, end_ns: int, make_input: Callable[[], np.ndarray]) -> None:
        """Encodes the window ending at end_ns (call when audio_due says so)."""
        self._encode("audio", end_ns, make_input)

    def update_audio_window(self, end_index: int, window: np.ndarray, end_ns: int) -> None:
        """Encodes a model-rate window [num_samples] that ends at absolute sample end_index
        (captured at end_ns).

        With a separate log-mel front end (runtime/split.py), when the previous window
        ended a whole number of DFT hops earlier, only the new frames' log-mel is computed
        and the rest is reused: frame j of this window is frame j + k of the last one.
        The frames are the same numbers either way; the front end is most of the audio
        encoder's cost, and at a 100 ms hop 90 % of each window's frames were there before.
        """
        spec, split = self.predictor.spec.audio, self.predictor.split
        if window.shape != (spec.num_samples,) or window.dtype != np.float32:
            raise ValueError(
                f"audio window: expected float32 [{spec.num_samples}] at the model's rate, "
                f"got {window.dtype} {list(window.shape)}"
            )
        if split.frontend is None:
            self._encode("audio", end_ns, lambda: window)
            return
        if self._mel_end == end_index and "audio" in self._cache:
            self.stats.reuses["audio"] = self.stats.reuses.get("audio", 0) + 1
            return
        frames, hop = spec.num_frames, spec.hop_length
        moved = None if self._mel_end is None else end_index - self._mel_end
        t0 = time.perf_counter_ns()
        if moved is not None and 0 < moved < frames * hop and moved % hop == 0:
            k = moved // hop
            chunk = window[spec.frame_samples(frames - k, k)]
            mel = np.concatenate([self._mel[..., k:], split.logmel(chunk[None])], axis=-1)
        else:
            k = frames
            mel = split.logmel(window[None])
        embedding = split.encode_logmel(mel)
        self.stats.add("audio", time.perf_counter_ns() - t0)
        self.stats.logmel_frames += k
        self._mel, self._mel_end = mel, end_index
        self._cache["audio"] = _Cached(end_ns, embedding)

    def audio_end_index(self) -> int | None:
        """Absolute sample index at which the cached audio window ends (index-cut windows)."""
        return self._mel_end

    def update_text(self, text: str, make_input: Callable[[], np.ndarray]) -> None:
        self._encode("text", text, make_input)

    def scores(self, present: dict[str, bool]) -> tuple[np.ndarray, np.ndarray]:
        """Fusion and head on the cached embeddings of the present modalities: [C], [D]."""
        spec = self.predictor.spec
        mask = np.array([[present.get(m, False) and m in self._cache for m in spec.modalities]])
        embeddings = {m: c.embedding for m, c in self._cache.items() if present.get(m)}
        t0 = time.perf_counter_ns()
        scores, embedding = self.predictor.fuse(embeddings, mask)
        self.stats.add("fusion", time.perf_counter_ns() - t0)
        return scores[0], embedding[0]
