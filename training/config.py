"""Training configuration: frozen dataclasses, a YAML file, and --set key=value overrides.

    fusionedge train --data D --out R --config small.yaml --set model.fusion=gated \\
        --set optim.lr=0.001 --set image.height=96

Keys are the dotted field paths below; an unknown key is an error that lists the keys
accepted at that level.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from fusionedge.spec import AudioSpec, ImageSpec, SpecError, from_dict, load_json
from fusionedge.training.augment import AugmentConfig, default_augment, upgrade_legacy


@dataclass(frozen=True)
class ModelConfig:
    """Which registered parts make the model, and their keyword arguments.

    Attributes:
        image_encoder: Name in the image encoder registry.
        audio_encoder: Name in the audio encoder registry.
        text_encoder: Name in the text encoder registry.
        fusion: Name in the fusion registry.
        task: "auto" infers it from the labels (strings: multiclass, or binary with two
            classes; lists: multilabel; numbers: regression).
        embed_dim: Width of every modality embedding and of the fused embedding.
        encoder_params: Extra keyword arguments per modality, e.g. {"image": {"width": 32}}.
        fusion_params: Extra keyword arguments of the fusion.
        head_params: Extra keyword arguments of the head, e.g. {"hidden": 64}.
    """

    image_encoder: str = "small_cnn"
    audio_encoder: str = "mel_cnn"
    text_encoder: str = "gru"
    # sum beat concat, attention, gated, late and poe on unseen speakers with a camera's
    # framing (benchmarks/RESULTS.md, "Real data"), and matched concat on the demo.
    fusion: str = "sum"
    task: Literal["auto", "multiclass", "binary", "multilabel", "regression"] = "auto"
    embed_dim: int = 64
    encoder_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    fusion_params: dict[str, Any] = field(default_factory=dict)
    head_params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class OptimConfig:
    """Optimiser and learning-rate schedule (linear warmup, then cosine to min_lr_ratio).

    Attributes:
        name: "adamw" or "sgd" (with Nesterov momentum).
        lr: Peak learning rate.
        weight_decay: Decoupled weight decay (AdamW) or L2 (SGD); not applied to biases,
            norms, embeddings of positions and placeholders.
        momentum: SGD momentum.
        warmup_epochs: Epochs of linear warmup (fractions allowed).
        min_lr_ratio: Final learning rate as a fraction of lr.
        grad_clip: Max global gradient norm; 0 turns clipping off.
    """

    name: Literal["adamw", "sgd"] = "adamw"
    # lr 3e-3 after a 1-epoch warmup trained faster on one demo seed and left the image
    # CNN dead (no better than chance alone) on another; 2e-3 after 3 epochs learned both.
    lr: float = 2e-3
    weight_decay: float = 0.01
    momentum: float = 0.9
    warmup_epochs: float = 3.0
    min_lr_ratio: float = 0.02
    grad_clip: float = 1.0


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on; saved as RUN/config.json.

    Attributes:
        image: Image preprocessing of the model (size, resize mode, normalisation).
        audio: Audio preprocessing of the model (rate, window, log-mel).
        text_max_length: Tokens per text input.
        model: The model's parts.
        optim: Optimiser and schedule.
        augment: Training-time augmentation per modality (training/augment.py):
            augment.image.*, augment.audio.* (with spec_augment.*), augment.text.*.
        class_weights: Loss weights per class, from the training split: "none",
            "balanced" (inverse class frequency) or a mapping {label: weight} (labels
            left out get 1). Not for regression; see training/balance.py per task.
        sampler: "shuffle" (each sample once per epoch) or "balanced" (every class drawn
            equally often, with replacement; multiclass and binary only).
        epochs: Maximum epochs.
        batch_size: Samples per batch, per process (under torchrun one optimiser step
            sees batch_size * world_size * accumulate_steps samples; the learning rate is
            not scaled with it).
        accumulate_steps: Batches whose gradients are summed (as a mean) into one
            optimiser step, for a larger effective batch than memory allows.
        freeze_encoders: Modalities whose encoders keep their initial (or loaded) weights;
            only the rest trains. When every encoder is frozen and no augmentation
            changes their inputs, each sample's embeddings are computed once and the
            epochs train the placeholders, fusion and head on them (much faster).
        compile: torch.compile the model for training (evaluation and export use the
            plain module); skipped with a warning where torch cannot compile.
        patience: Epochs without validation improvement before stopping early; 0 never.
        seed: Seeds weights, shuffling and modality dropout; CPU runs repeat exactly.
        device: "auto" (CUDA when available), "cpu", "cuda" or "cuda:N".
        amp: Mixed precision on CUDA (bf16 where supported, else fp16 with loss scaling).
        modality_dropout: Per-modality probability of hiding it from a training sample,
            so the model learns to predict when a camera is covered or a mic is off.
        unimodal_loss_weight: Weight of an extra loss per modality, computed through the
            same fusion and head with only that modality present. Without it a fused
            model leans on the modality that is easiest to learn and under-trains the
            others, which then fail when they are all that is left.
        ema_decay: Validation, "best" and the exported weights are an exponential moving
            average of the trained weights with this decay per step (0 turns it off).
            Averaging removes most of the epoch-to-epoch jitter a small model shows on
            noisy data, so early stopping picks a model, not a lucky epoch.
        threads: CPU threads for torch; 0 keeps torch's default.
        tensorboard: Write TensorBoard logs to RUN/tensorboard when tensorboard is installed.
        data_in_memory_mb: The train and val splits, decoded, are held in memory when they
            take at most this many MB. Larger data sets are decoded once into files beside
            the run folder (removed when training ends) and read a batch at a time, so
            memory does not grow with the data set (fusionedge.decoded). The batches, and
            so the trained weights, are the same either way. 0: always on disk.
    """

    image: ImageSpec = field(default_factory=ImageSpec)
    # Per-band normalisation removes the microphone's response and the room's loudness,
    # which differ between a user's recordings and the live microphone (+4.6 points
    # fused on unseen speakers, benchmarks/RESULTS.md). AudioSpec itself keeps "none"
    # so that model files written before it read back unchanged.
    audio: AudioSpec = field(default_factory=lambda: AudioSpec(normalize="bands"))
    text_max_length: int = 32
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    augment: AugmentConfig = field(default_factory=default_augment)
    class_weights: str | dict[str, float] = "none"
    sampler: Literal["shuffle", "balanced"] = "shuffle"
    epochs: int = 40
    batch_size: int = 64
    accumulate_steps: int = 1
    freeze_encoders: tuple[str, ...] = ()
    compile: bool = False
    patience: int = 8
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    modality_dropout: dict[str, float] = field(
        default_factory=lambda: {"image": 0.3, "audio": 0.3, "text": 0.2}
    )
    unimodal_loss_weight: float = 0.5
    ema_decay: float = 0.995
    threads: int = 0
    tensorboard: bool = True
    data_in_memory_mb: float = 2048.0

    def __post_init__(self) -> None:
        for key, ok, accepted in [
            ("epochs", self.epochs >= 1, "at least 1"),
            ("batch_size", self.batch_size >= 1, "at least 1"),
            ("accumulate_steps", self.accumulate_steps >= 1, "at least 1"),
            ("patience", self.patience >= 0, "0 (off) or more"),
            ("text_max_length", self.text_max_length >= 1, "at least 1"),
            ("optim.lr", self.optim.lr > 0, "a positive number"),
            ("threads", self.threads >= 0, "0 (default) or more"),
            ("unimodal_loss_weight", self.unimodal_loss_weight >= 0, "0 (off) or more"),
            ("ema_decay", 0 <= self.ema_decay < 1, "a decay in [0, 1)"),
            ("data_in_memory_mb", self.data_in_memory_mb >= 0, "0 (always on disk) or more"),
        ]:
            if not ok:
                raise SpecError(f"{key}: expected {accepted}")
        if isinstance(self.class_weights, str) and self.class_weights not in ("none", "balanced"):
            raise SpecError(
                "class_weights: expected 'none', 'balanced' or a mapping {label: weight}, "
                f"got {self.class_weights!r}"
            )
        for m in self.freeze_encoders:
            if m not in ("image", "audio", "text"):
                raise SpecError(
                    f"freeze_encoders: unknown modality {m!r}; accepted: image, audio, text"
                )
        for m in self.model.encoder_params:
            if m not in ("image", "audio", "text"):
                raise SpecError(
                    f"model.encoder_params.{m}: unknown modality; accepted: image, audio, text"
                )
        for m, p in self.modality_dropout.items():
            if m not in ("image", "audio", "text") or not 0.0 <= p < 1.0:
                raise SpecError(
                    f"modality_dropout.{m}: expected a modality name (image, "
                    f"audio, text) with a probability in [0, 1), got {p!r}"
                )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


def yaml_load(text: str) -> Any:
    """yaml.safe_load, except that 1e-3 is a number as in YAML 1.2 and JSON.

    PyYAML follows YAML 1.1, where a float needs a dot: `lr: 1e-3` would be the string
    "1e-3", and learning rates are written exactly that way.
    """
    import re

    import yaml

    class Loader(yaml.SafeLoader):
        pass

    number = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$")
    Loader.add_implicit_resolver("tag:yaml.org,2002:float", number, list("-+0123456789."))
    try:
        return yaml.load(text, Loader=Loader)
    except RecursionError:  # PyYAML builds nested values recursively
        raise SpecError("YAML nested too deeply to read") from None


def parse_override(item: str) -> tuple[str, Any]:
    """ "optim.lr=1e-3" -> ("optim.lr", 0.001). Values are parsed as YAML scalars/lists."""
    import yaml

    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise SpecError(f"--set expects key=value (e.g. optim.lr=0.001), got {item!r}")
    try:
        value = yaml_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise SpecError(f"--set {item!r}: the value is not valid YAML: {e}") from e
    return key.strip(), value


def _set_path(tree: dict[str, Any], key: str, value: Any) -> None:
    node = tree
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise SpecError(f"--set {key}: {'.'.join(parts[: i + 1])} is not a section")
        node = child
    node[parts[-1]] = value


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in update.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> TrainConfig:
    """Defaults, then the YAML (or JSON) file, then each --set override, in that order.

    Raises:
        SpecError: naming the key that is unknown or of the wrong type.
        FileNotFoundError: the config file does not exist.
    """
    import yaml

    tree = TrainConfig().to_dict()
    if path is not None:
        path = Path(path)
        try:
            loaded = yaml_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise SpecError(f"{path}: not valid YAML: {e}") from e
        if not isinstance(loaded, dict):
            raise SpecError(f"{path}: expected a mapping of config keys at the top level")
        tree = _merge(tree, loaded)
    for item in overrides:
        key, value = parse_override(item)
        _set_path(tree, key, value)
    return from_dict(TrainConfig, tree)


def config_from_json(text: str) -> TrainConfig:
    """The config of a run folder (config.json), also one written by an older fusionedge."""
    return from_dict(TrainConfig, upgrade_legacy(load_json(text, "config.json")))
