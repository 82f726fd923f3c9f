"""Training-time augmentation per modality, done on the batch in torch on the training device.

Nothing here is part of the exported graph: images, audio and tokens are changed in the
training loop before the model sees them, and SpecAugment (training/specaugment.py) runs
inside the audio encoder only in training mode. Every random draw comes from the
generator the trainer seeds by (seed, epoch), so a resumed CPU run repeats exactly.

Config keys (all 0 / None by default except the image geometry, which is what the demo
data was tuned with):

    augment.image.{rotate_deg, scale, translate, crop, flip, color_jitter, noise}
    augment.audio.{gain_db, shift_s, noise_snr_db}
    augment.audio.spec_augment.{time_masks, time_width, freq_masks, freq_width}
    augment.text.{token_dropout, typo_rate}
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from fusionedge.spec import ModelSpec, SpecError
from fusionedge.tokenizer import PAD_ID, UNK_ID


def _check(ok: bool, key: str, accepted: str) -> None:
    if not ok:
        raise SpecError(f"augment.{key}: expected {accepted}")


@dataclass(frozen=True)
class ImageAugment:
    """Random per-sample changes to images; 0 turns a part off.

    Attributes:
        rotate_deg: Rotation drawn from [-x, x] degrees.
        scale: Zoom drawn from [1 - x, 1 + x].
        translate: Shift drawn from [-x, x] of the image size, per axis.
        crop: Random crop, resized back: each side keeps a fraction drawn from [1 - x, 1]
            of the image, at a random position.
        flip: Probability of a left-right mirror. Off by default and only for labels that
            survive mirroring: a mirrored digit or word is not the same class.
        color_jitter: Brightness, contrast and saturation factors each drawn from
            [1 - x, 1 + x].
        noise: Gaussian pixel noise with a standard deviation drawn from [0, x] of the
            full 0-255 range.
    """

    rotate_deg: float = 12.0
    scale: float = 0.1
    translate: float = 0.1
    crop: float = 0.0
    flip: float = 0.0
    color_jitter: float = 0.0
    noise: float = 0.0

    def __post_init__(self) -> None:
        _check(self.rotate_deg >= 0, "image.rotate_deg", "0 (off) or more degrees")
        for key in ("scale", "translate", "crop", "color_jitter"):
            _check(0 <= getattr(self, key) < 1, f"image.{key}", "a fraction in [0, 1)")
        _check(0 <= self.flip <= 1, "image.flip", "a probability in [0, 1]")
        _check(0 <= self.noise <= 1, "image.noise", "a fraction in [0, 1]")

    @property
    def geometry(self) -> bool:
        return bool(self.rotate_deg or self.scale or self.translate or self.crop or self.flip)

    @property
    def enabled(self) -> bool:
        return self.geometry or bool(self.color_jitter or self.noise)


@dataclass(frozen=True)
class SpecAugmentConfig:
    """Masks on the log-mel inside the audio encoder, in training mode only (SpecAugment).

    Attributes:
        time_masks: Masks over time per sample.
        time_width: Widest time mask, in log-mel frames (width drawn from [0, x]).
        freq_masks: Masks over mel bands per sample.
        freq_width: Widest frequency mask, in mel bands.
    """

    time_masks: int = 0
    time_width: int = 0
    freq_masks: int = 0
    freq_width: int = 0

    def __post_init__(self) -> None:
        for key in ("time_masks", "time_width", "freq_masks", "freq_width"):
            _check(getattr(self, key) >= 0, f"audio.spec_augment.{key}", "0 (off) or more")

    @property
    def enabled(self) -> bool:
        return bool((self.time_masks and self.time_width) or (self.freq_masks and self.freq_width))


@dataclass(frozen=True)
class AudioAugment:
    """Random per-sample changes to the PCM window; 0 / None turns a part off.

    Attributes:
        gain_db: Gain drawn from [-x, x] dB; the result is clipped to [-1, 1] as a real
            input would be.
        shift_s: Shift in time drawn from [-x, x] seconds; what moves out of the window is
            lost and silence moves in, as when a word starts early or late.
        noise_snr_db: White noise at a signal-to-noise ratio drawn from [x, x + 20] dB
            per sample (None: no noise). Silent (absent) audio stays silent.
        spec_augment: Time and frequency masks on the log-mel.
    """

    gain_db: float = 0.0
    shift_s: float = 0.0
    noise_snr_db: float | None = None
    spec_augment: SpecAugmentConfig = field(default_factory=SpecAugmentConfig)

    def __post_init__(self) -> None:
        _check(self.gain_db >= 0, "audio.gain_db", "0 (off) or more dB")
        _check(self.shift_s >= 0, "audio.shift_s", "0 (off) or more seconds")

    @property
    def enabled(self) -> bool:
        return bool(self.gain_db or self.shift_s or self.noise_snr_db is not None)


@dataclass(frozen=True)
class TextAugment:
    """Random per-token changes to the text; 0 turns a part off.

    Attributes:
        token_dropout: Probability that a token becomes the unknown token (not padding:
            the text encoders read padding as the end of the text).
        typo_rate: Probability that a character is replaced by a random other character
            of the vocabulary.
    """

    token_dropout: float = 0.0
    typo_rate: float = 0.0

    def __post_init__(self) -> None:
        _check(0 <= self.token_dropout < 1, "text.token_dropout", "a probability in [0, 1)")
        _check(0 <= self.typo_rate < 1, "text.typo_rate", "a probability in [0, 1)")

    @property
    def enabled(self) -> bool:
        return bool(self.token_dropout or self.typo_rate)


@dataclass(frozen=True)
class AugmentConfig:
    """Training-time augmentation, one section per modality."""

    image: ImageAugment = field(default_factory=ImageAugment)
    audio: AudioAugment = field(default_factory=AudioAugment)
    text: TextAugment = field(default_factory=TextAugment)


LEGACY_IMAGE_KEYS = {"image_rotate_deg": "rotate_deg", "image_scale": "scale"}
LEGACY_IMAGE_KEYS["image_translate"] = "translate"


def upgrade_legacy(tree: dict[str, Any]) -> dict[str, Any]:
    """Moves the flat keys of run folders written before the per-modality sections
    (augment.image_rotate_deg, ...) to augment.image.*, so those runs still resume."""
    augment = tree.get("augment")
    if not isinstance(augment, dict) or not set(augment) & set(LEGACY_IMAGE_KEYS):
        return tree
    augment = dict(augment)
    image = dict(augment.get("image") or {})
    for old, new in LEGACY_IMAGE_KEYS.items():
        if old in augment:
            image[new] = augment.pop(old)
    augment["image"] = image
    return {**tree, "augment": augment}


def uniform(
    scale: float | torch.Tensor, shape: tuple[int, ...], generator: torch.Generator
) -> torch.Tensor:
    """Uniform in [-scale, scale], drawn on the generator's device."""
    return (torch.rand(shape, generator=generator, device=generator.device) * 2 - 1) * scale


def affine_theta(n: int, config: ImageAugment, generator: torch.Generator) -> torch.Tensor:
    """[N, 2, 3] maps from output to input grid coordinates (both span [-1, 1])."""
    angle = uniform(math.radians(config.rotate_deg), (n,), generator)
    zoom = 1 + uniform(config.scale, (n,), generator)
    shift = uniform(2 * config.translate, (n, 2), generator)
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack(
        [torch.stack([cos, -sin, shift[:, 0]], dim=1), torch.stack([sin, cos, shift[:, 1]], dim=1)],
        dim=1,
    )
    # Drawn only when on, so a config without them repeats the runs made before they existed.
    if config.crop or config.flip:
        # Crop then mirror, both as a scale and shift of the output grid before the warp.
        side = 1 - torch.rand((n, 2), generator=generator, device=generator.device) * config.crop
        offset = uniform(1.0, (n, 2), generator) * (1 - side)
        mirror = torch.rand((n,), generator=generator, device=generator.device) < config.flip
        side = side.clone()
        side[:, 0] = torch.where(mirror, -side[:, 0], side[:, 0])
        inner = torch.zeros(n, 3, 3, device=theta.device)
        inner[:, 0, 0], inner[:, 1, 1] = side[:, 0], side[:, 1]
        inner[:, :2, 2], inner[:, 2, 2] = offset, 1.0
        theta = torch.bmm(theta, inner)
    return theta


def luma(x: torch.Tensor) -> torch.Tensor:
    """[N, 3, H, W] RGB -> [N, 1, H, W] grey (ITU-R BT.601 weights)."""
    return (x * x.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)


def augment_images(
    images: torch.Tensor, config: ImageAugment, generator: torch.Generator
) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> float32 [N, H, W, 3] on the 0-255 scale, randomly changed.

    One affine grid_sample for the whole batch (rotation, zoom, shift, crop and flip in one
    matrix): a few milliseconds on CPU for 64 small images, where per-image OpenCV warps
    in Python would cost more than the model step.
    """
    n = images.shape[0]
    x = images.permute(0, 3, 1, 2).float()
    if config.geometry:
        theta = affine_theta(n, config, generator).to(x.device)
        grid = nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
        x = nn.functional.grid_sample(x, grid, padding_mode="border", align_corners=False)
    if config.color_jitter:
        brightness, contrast, saturation = 1 + uniform(
            config.color_jitter, (3, n, 1, 1, 1), generator
        )
        x = x * brightness
        level = luma(x).mean(dim=(2, 3), keepdim=True)  # contrast pivots on the mean grey
        x = level + (x - level) * contrast
        gray = luma(x)
        x = gray + (x - gray) * saturation
    if config.noise:
        sigma = torch.rand((n, 1, 1, 1), generator=generator, device=x.device) * config.noise * 255
        x = x + sigma * torch.randn(x.shape, generator=generator, device=x.device)
    if config.color_jitter or config.noise:
        x = x.clamp(0, 255)
    return x.permute(0, 2, 3, 1)


def augment_audio(
    audio: torch.Tensor, config: AudioAugment, sample_rate: int, generator: torch.Generator
) -> torch.Tensor:
    """float32 PCM [N, S] -> [N, S]: gain, shift and white noise, each per sample."""
    n, s = audio.shape
    x = audio.float()
    if config.gain_db:
        gain = 10 ** (uniform(config.gain_db, (n, 1), generator) / 20)
        x = (x * gain).clamp(-1, 1)
    if config.shift_s:
        limit = config.shift_s * sample_rate
        shift = uniform(limit, (n, 1), generator).round().long()
        source = torch.arange(s, device=x.device).unsqueeze(0) - shift  # [N, S]
        inside = (source >= 0) & (source < s)
        x = torch.where(inside, x.gather(1, source.clamp(0, s - 1)), x.new_zeros(()))
    if config.noise_snr_db is not None:
        snr_db = config.noise_snr_db + 20 * torch.rand((n, 1), generator=generator, device=x.device)
        power = x.pow(2).mean(dim=1, keepdim=True)
        sigma = torch.sqrt(power / 10 ** (snr_db / 10))
        x = x + sigma * torch.randn(x.shape, generator=generator, device=x.device)
    return x


def augment_tokens(
    tokens: torch.Tensor, config: TextAugment, vocab_size: int, generator: torch.Generator
) -> torch.Tensor:
    """int64 [N, L] -> [N, L]: typos and token dropout on real tokens; padding stays put.

    The tokenizer is character level, so a token is a character and a typo is a swap
    for a random character of the vocabulary (ids 2..vocab_size-1; 0 and 1 are PAD, UNK).
    """
    real = tokens != PAD_ID
    out = tokens
    if config.typo_rate and vocab_size > 2:
        typo = real & (
            torch.rand(tokens.shape, generator=generator, device=tokens.device) < config.typo_rate
        )
        chars = torch.randint(
            2, vocab_size, tokens.shape, generator=generator, device=tokens.device
        )
        out = torch.where(typo, chars, out)
    if config.token_dropout:
        drop = real & (
            torch.rand(tokens.shape, generator=generator, device=tokens.device)
            < config.token_dropout
        )
        out = torch.where(drop, torch.full_like(out, UNK_ID), out)
    return out


def augment_batch(
    inputs: dict[str, torch.Tensor],
    config: AugmentConfig,
    spec: ModelSpec,
    generator: torch.Generator,
) -> dict[str, torch.Tensor]:
    """Augments each modality of a training batch that has a part turned on.

    The image goes first so that runs without the newer parts draw the same numbers as
    before they existed.
    """
    out = dict(inputs)
    if "image" in out and config.image.enabled:
        out["image"] = augment_images(out["image"], config.image, generator)
    if "audio" in out and config.audio.enabled:
        rate = spec.audio.sample_rate  # type: ignore[union-attr]
        out["audio"] = augment_audio(out["audio"], config.audio, rate, generator)
    if "text" in out and config.text.enabled:
        vocab = spec.text.tokenizer.vocab_size  # type: ignore[union-attr]
        out["text"] = augment_tokens(out["text"], config.text, vocab, generator)
    return out
