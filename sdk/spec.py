"""ModelSpec: the contract that travels with every checkpoint and every ONNX file.

A spec says which modalities a model takes and how each one is preprocessed, what the
labels are, which encoders, fusion and head it is built from, and how well it trained.
Training, export and the runtime all read preprocessing parameters from here and nowhere
else, so a model file carries everything needed to feed it.

Every class is a frozen dataclass that round-trips through JSON. Parsing is strict: an
unknown key or a wrong type is an error that names the key, because a silently ignored
field in a deployed model is a wrong prediction nobody can explain.

The dataclasses and their bounds live here; the bounded, strict reading of JSON-like data
(from_dict, load_json, check_json_values, brief, MAX_DEPTH, SpecError) lives in
fusionedge.spec_json (sdk/spec_json.py), and this module re-exports it.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any, Literal

from fusionedge.spec_json import (
    MAX_DEPTH,
    SpecError,
    brief,
    check_json_values,
    from_dict,
    load_json,
)
from fusionedge.version import __version__

# Schema 1 still covers the "wordpiece" tokenizer kind: every older file (all "char")
# reads as before, and a fusionedge that predates "wordpiece" refuses such a file with
# "text.tokenizer.kind: expected one of ['char'], got 'wordpiece'" (strict parsing)
# instead of misreading it. Bumping would have made char-only files written now
# unreadable to those versions for no gain.
SCHEMA_VERSION = 1
MODALITIES = ("image", "audio", "text")
TASKS = ("multiclass", "binary", "multilabel", "regression")

# The special tokens a wordpiece vocabulary must have (BERT's names).
WORDPIECE_SPECIAL = ("[PAD]", "[UNK]", "[CLS]", "[SEP]")

# Upper bounds. A spec arrives in files a user may not trust (a downloaded model's ONNX
# metadata, a checkpoint), and the runtime allocates its inputs from it: these keep one
# row of every input small while staying far above any model this project trains.
MAX_IMAGE_SIDE = 4096  # pixels: 4096 x 4096 x 3 uint8 is 48 MiB per row
MAX_SAMPLE_RATE = 384_000  # Hz: the highest rate audio interfaces offer
MAX_WINDOW_SECONDS = 600  # 10 minutes of audio per window ...
MAX_NUM_SAMPLES = 1 << 24  # ... and never more than 64 MiB of float32 per row, the bound
#                            of the split front end's dynamic sample axis (export/split.py)
MAX_N_FFT = 8192  # the front end's DFT kernels grow as n_fft squared: 268 MB at 8192
MAX_N_MELS = 1024
MAX_TEXT_LENGTH = 4096  # tokens: BERT-sized models use 512
MAX_VOCAB = 1_000_000  # tokens: about every Unicode code point for "char"
MAX_LABELS = 100_000
MAX_EMBED_DIM = 16_384

Modality = Literal["image", "audio", "text"]
Task = Literal["multiclass", "binary", "multilabel", "regression"]


@dataclass(frozen=True)
class ImageSpec:
    """Host side: decode to RGB and resize to (height, width). Graph side: normalise.

    Attributes:
        height: Model input height in pixels.
        width: Model input width in pixels.
        resize: "stretch" resizes to the target ignoring aspect ratio; "letterbox" keeps
            the aspect ratio and pads with black.
        mean: Per-channel RGB mean subtracted inside the graph, on the 0-1 scale.
        std: Per-channel RGB standard deviation divided inside the graph.
    """

    height: int = 48
    width: int = 48
    resize: Literal["stretch", "letterbox"] = "stretch"
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.25, 0.25, 0.25)

    def __post_init__(self) -> None:
        _require(
            all(8 <= side <= MAX_IMAGE_SIDE for side in (self.height, self.width)),
            "image.height/width",
            f"at least 8 and at most {MAX_IMAGE_SIDE} pixels",
        )
        _require(self.resize in ("stretch", "letterbox"), "image.resize", "stretch or letterbox")
        _require(all(map(math.isfinite, self.mean)), "image.mean", "finite numbers")
        _require(all(0 < s < math.inf for s in self.std), "image.std", "positive finite values")


@dataclass(frozen=True)
class AudioSpec:
    """Host side: mono PCM at sample_rate, windows of num_samples. Graph side: log-mel.

    Attributes:
        sample_rate: Hz of the PCM the model takes; other rates are resampled to it.
        num_samples: Samples per window (the live loop feeds the last num_samples).
        n_fft: DFT size of the log-mel front end (a Conv1d with fixed kernels).
        hop_length: Samples between log-mel frames.
        n_mels: Mel bands.
        f_min: Lowest mel band edge in Hz.
        f_max: Highest mel band edge in Hz; None means sample_rate / 2.
        log_floor: Added before the log so silence stays finite.
        normalize: Graph side, after the log-mel, per window: "window" subtracts the
            window's mean and divides by its standard deviation, so the model sees the same
            input whatever the microphone's gain and the talker's distance; "bands" removes
            each mel band's own mean over the window instead, which also cancels a
            microphone's frequency response but erases a steady tone or hum; "none" (what
            files written before it existed use) feeds the log-mel as it is.
    """

    sample_rate: int = 16000
    num_samples: int = 16000
    n_fft: int = 400
    hop_length: int = 160
    n_mels: int = 40
    f_min: float = 20.0
    f_max: float | None = None
    log_floor: float = 1e-6
    normalize: Literal["none", "window", "bands"] = "none"

    def __post_init__(self) -> None:
        _require(
            self.normalize in ("none", "window", "bands"),
            "audio.normalize",
            "none, window or bands",
        )
        _require(
            1000 <= self.sample_rate <= MAX_SAMPLE_RATE,
            "audio.sample_rate",
            f"at least 1000 Hz and at most {MAX_SAMPLE_RATE} Hz",
        )
        most = min(MAX_WINDOW_SECONDS * self.sample_rate, MAX_NUM_SAMPLES)
        _require(
            self.n_fft <= self.num_samples <= most,
            "audio.num_samples",
            f"at least n_fft and at most min({MAX_WINDOW_SECONDS} s * sample_rate, "
            f"{MAX_NUM_SAMPLES}) = {most}",
        )
        _require(self.n_fft <= MAX_N_FFT, "audio.n_fft", f"at most {MAX_N_FFT}")
        _require(0 < self.hop_length <= self.n_fft, "audio.hop_length", "in (0, n_fft]")
        _require(1 <= self.n_mels <= MAX_N_MELS, "audio.n_mels", f"1 to {MAX_N_MELS}")
        _require(0 < self.log_floor < math.inf, "audio.log_floor", "a positive finite number")
        top = self.sample_rate / 2 if self.f_max is None else self.f_max
        _require(
            0 <= self.f_min < top <= self.sample_rate / 2,
            "audio.f_min/f_max",
            "0 <= f_min < f_max <= sample_rate / 2",
        )

    @property
    def window_seconds(self) -> float:
        return self.num_samples / self.sample_rate

    @property
    def num_frames(self) -> int:
        """Log-mel frames per window (the DFT convolution has no padding)."""
        return 1 + (self.num_samples - self.n_fft) // self.hop_length

    def frame_samples(self, first: int, count: int) -> slice:
        """The samples of a window that log-mel frames first .. first + count - 1 read.

        The framing rule of the graph's front end: frame j covers samples
        [j * hop_length, j * hop_length + n_fft), no padding at either end.
        """
        return slice(first * self.hop_length, (first + count - 1) * self.hop_length + self.n_fft)


@dataclass(frozen=True)
class TokenizerSpec:
    """The tokenizer of the text input, with its whole vocabulary.

    "char" (the default): a character vocabulary learned from the training text.
    Characters keep typos meaningful ("sevn" still shares most of "seven"), which a word
    vocabulary would map to one unknown token. Index 0 is padding, 1 is unknown.

    "wordpiece": a pretrained BERT vocabulary (vocab.txt of a Hugging Face folder, see
    fusionedge.wordpiece), id = position in vocab; [PAD], [UNK], [CLS] and [SEP] are
    looked up by name. Lower-casing also strips accents, as BERT's uncased models do.

    Attributes:
        kind: Tokenizer family: "char" or "wordpiece".
        vocab: "char": the characters with ids 2, 3, ... in order; "wordpiece": every
            token, with id = index.
        lowercase: Lower-case text before lookup ("char": after NFKC normalisation;
            "wordpiece": and strip accents).
    """

    kind: Literal["char", "wordpiece"] = "char"
    vocab: tuple[str, ...] = ()
    lowercase: bool = True

    def __post_init__(self) -> None:
        _require(self.kind in ("char", "wordpiece"), "text.tokenizer.kind", '"char" or "wordpiece"')
        _require(
            len(self.vocab) <= MAX_VOCAB, "text.tokenizer.vocab", f"at most {MAX_VOCAB} tokens"
        )
        if self.kind == "char":
            _require(
                all(len(c) == 1 for c in self.vocab), "text.tokenizer.vocab", "single characters"
            )
            _require(
                len(set(self.vocab)) == len(self.vocab),
                "text.tokenizer.vocab",
                "unique characters",
            )
        else:
            missing = [t for t in WORDPIECE_SPECIAL if t not in self.vocab]
            _require(
                not missing,
                "text.tokenizer.vocab",
                f"a wordpiece vocabulary with {list(WORDPIECE_SPECIAL)} (missing {missing})",
            )

    @property
    def vocab_size(self) -> int:
        """Ids run from 0 to vocab_size - 1."""
        return len(self.vocab) + 2 if self.kind == "char" else len(self.vocab)


@dataclass(frozen=True)
class TextSpec:
    """Tokens are padded or cut to max_length; the length is fixed (docs/ARCHITECTURE.md,
    "Known pitfalls").

    Attributes:
        max_length: Tokens per sample.
        tokenizer: The tokenizer and its vocabulary (learned, or a pretrained one).
    """

    max_length: int = 32
    tokenizer: TokenizerSpec = field(default_factory=TokenizerSpec)

    def __post_init__(self) -> None:
        _require(
            1 <= self.max_length <= MAX_TEXT_LENGTH,
            "text.max_length",
            f"at least 1 and at most {MAX_TEXT_LENGTH}",
        )
        if self.tokenizer.kind == "wordpiece":
            _require(
                self.max_length >= 3,
                "text.max_length",
                "at least 3 with a wordpiece tokenizer ([CLS], one token, [SEP])",
            )


@dataclass(frozen=True)
class ComponentSpec:
    """A registered part (encoder, fusion or head) by name, with its keyword arguments."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to build, feed and interpret a fused model.

    Attributes:
        modalities: The modalities the model takes, in the canonical order of MODALITIES.
        labels: Class names (multiclass, binary, multilabel) or the target name
            (regression). Score column i belongs to labels[i].
        task: What the head predicts.
        image: Image preprocessing, present iff "image" is in modalities.
        audio: Audio preprocessing, present iff "audio" is in modalities.
        text: Text preprocessing, present iff "text" is in modalities.
        encoders: One component per modality.
        fusion: How the per-modality embeddings are combined.
        head: The task head.
        embed_dim: Width of each modality embedding and of the fused embedding.
        metrics: Validation metrics recorded at training time (informational).
        fusionedge_version: The version that wrote the spec.
        schema_version: Bumped whenever a reader of an older version would misread it.
    """

    modalities: tuple[str, ...]
    labels: tuple[str, ...]
    task: Task
    encoders: dict[str, ComponentSpec]
    fusion: ComponentSpec
    head: ComponentSpec
    embed_dim: int = 64
    image: ImageSpec | None = None
    audio: AudioSpec | None = None
    text: TextSpec | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    fusionedge_version: str = __version__
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        _require(len(self.modalities) > 0, "modalities", f"a non-empty subset of {MODALITIES}")
        _require(
            list(self.modalities) == [m for m in MODALITIES if m in self.modalities],
            "modalities",
            f"distinct names from {MODALITIES} in that order",
        )
        for m in MODALITIES:
            has = getattr(self, m) is not None
            _require(
                has == (m in self.modalities),
                m,
                f"a section exactly when {m!r} is one of the modalities",
            )
        _require(
            set(self.encoders) == set(self.modalities),
            "encoders",
            f"one encoder for each of {self.modalities}",
        )
        _require(self.task in TASKS, "task", f"one of {TASKS}")
        _require(len(self.labels) >= 1, "labels", "at least one label")
        _require(len(self.labels) <= MAX_LABELS, "labels", f"at most {MAX_LABELS} labels")
        _require(len(set(self.labels)) == len(self.labels), "labels", "unique names")
        _require(all(self.labels), "labels", "non-empty names")
        if self.task == "binary":
            _require(len(self.labels) == 2, "labels", "exactly two labels for a binary task")
        if self.task == "regression":
            _require(len(self.labels) == 1, "labels", "one target name for regression")
        _require(
            1 <= self.embed_dim <= MAX_EMBED_DIM,
            "embed_dim",
            f"at least 1 and at most {MAX_EMBED_DIM}",
        )

    @property
    def num_outputs(self) -> int:
        """Columns of the `scores` output."""
        return len(self.labels)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self, indent: int | None = 2) -> str:
        """The spec as JSON; refuses (SpecError) what from_json would refuse, such as a
        NaN among the metrics, so no file is written that cannot be read back."""
        data = self.to_dict()
        check_json_values(data, "")
        return json.dumps(data, indent=indent, sort_keys=True, allow_nan=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        if not isinstance(data, dict):
            raise SpecError(f"a model spec is a JSON object, got {type(data).__name__}")
        version = data.get("schema_version", SCHEMA_VERSION)
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise SpecError(f"schema_version: expected a positive integer, got {brief(version)}")
        if version > SCHEMA_VERSION:
            raise SpecError(
                f"spec schema_version {brief(version)} is newer than this fusionedge "
                f"({__version__}) reads (up to {SCHEMA_VERSION}); upgrade fusionedge"
            )
        return from_dict(cls, data)

    @classmethod
    def from_json(cls, text: str | bytes) -> ModelSpec:
        """Parses a spec; every way the text can be wrong is a SpecError."""
        data = load_json(text, "a model spec")
        # The same check as to_json's, from the root: what one writes, the other reads.
        check_json_values(data, "")
        return cls.from_dict(data)

    def replace(self, **changes: Any) -> ModelSpec:
        return dataclasses.replace(self, **changes)


def _require(ok: bool, key: str, accepted: str) -> None:
    if not ok:
        raise SpecError(f"{key}: expected {accepted}")


__all__ = [
    "MAX_DEPTH",
    "MAX_EMBED_DIM",
    "MAX_IMAGE_SIDE",
    "MAX_LABELS",
    "MAX_NUM_SAMPLES",
    "MAX_N_FFT",
    "MAX_N_MELS",
    "MAX_SAMPLE_RATE",
    "MAX_TEXT_LENGTH",
    "MAX_VOCAB",
    "MAX_WINDOW_SECONDS",
    "MODALITIES",
    "SCHEMA_VERSION",
    "TASKS",
    "WORDPIECE_SPECIAL",
    "AudioSpec",
    "ComponentSpec",
    "ImageSpec",
    "Modality",
    "ModelSpec",
    "SpecError",
    "Task",
    "TextSpec",
    "TokenizerSpec",
    "brief",
    "check_json_values",
    "from_dict",
    "load_json",
]
