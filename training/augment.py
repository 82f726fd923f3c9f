"""Training-time augmentation per modality, done on the batch in torch on the training device.

Nothing here is part of the exported graph: images, audio and tokens are changed in the
training loop before the model sees them, and SpecAugment (training/specaugment.py) runs
inside the audio encoder only in training mode. Every random draw comes from the
generator the trainer seeds by (seed, epoch), so a resumed CPU run repeats exactly.

Config keys (all 0 / None by default except the image geometry, which is what the demo
data was tuned with):

    augment.image.{rotate_deg, scale, translate, crop, flip, color_jitter, noise, zoom_out,
                   aspect, blur}
    augment.audio.{gain_db, shift_s, noise_snr_db, speed}
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
        zoom_out: The image becomes an object in a camera's view: its side spans a
            fraction drawn from [1 - x, 1] of the frame, at a random place where it fits,
            on a random background (a colour, a gradient and noise). A camera rarely
            frames what it is shown the way the training files were cropped.
        framed: Probability that a sample gets zoom_out and aspect; the rest keep the
            training file's framing, from which the encoder learns the object's shape
            while the framed ones teach it to find the object in a scene.
        aspect: The aspect ratio changes by a factor drawn log-uniformly from
            [1 / (1 + x), 1 + x]: a 4:3 camera frame resized to a square model input
            squeezes what it shows by 0.75.
        blur: Gaussian blur with a sigma drawn from [0, x] pixels of the model's input
            (focus and motion).
    """

    rotate_deg: float = 12.0
    scale: float = 0.1
    translate: float = 0.1
    crop: float = 0.0
    flip: float = 0.0
    color_jitter: float = 0.0
    noise: float = 0.0
    zoom_out: float = 0.0
    framed: float = 1.0
    aspect: float = 0.0
    blur: float = 0.0

    def __post_init__(self) -> None:
        _check(self.rotate_deg >= 0, "image.rotate_deg", "0 (off) or more degrees")
        _check(self.aspect >= 0, "image.aspect", "0 (off) or more")
        _check(self.blur >= 0, "image.blur", "0 (off) or more pixels")
        _check(0 <= self.framed <= 1, "image.framed", "a probability in [0, 1]")
        for key in ("scale", "translate", "crop", "color_jitter", "zoom_out"):
            _check(0 <= getattr(self, key) < 1, f"image.{key}", "a fraction in [0, 1)")
        _check(0 <= self.flip <= 1, "image.flip", "a probability in [0, 1]")
        _check(0 <= self.noise <= 1, "image.noise", "a fraction in [0, 1]")

    @property
    def geometry(self) -> bool:
        return bool(
            self.rotate_deg
            or self.scale
            or self.translate
            or self.crop
            or self.flip
            or self.zoom_out
            or self.aspect
        )

    @property
    def enabled(self) -> bool:
        return self.geometry or bool(self.color_jitter or self.noise or self.blur)


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
        speed: Playback speed drawn from [1 - x, 1 + x] about the window's centre,
            which moves tempo and pitch together: another speaker talks faster or
            slower, higher or lower.
        spec_augment: Time and frequency masks on the log-mel.
    """

    gain_db: float = 0.0
    shift_s: float = 0.0
    noise_snr_db: float | None = None
    speed: float = 0.0
    spec_augment: SpecAugmentConfig = field(default_factory=SpecAugmentConfig)

    def __post_init__(self) -> None:
        _check(self.gain_db >= 0, "audio.gain_db", "0 (off) or more dB")
        _check(self.shift_s >= 0, "audio.shift_s", "0 (off) or more seconds")
        _check(0 <= self.speed < 1, "audio.speed", "a fraction in [0, 1)")

    @property
    def enabled(self) -> bool:
        return bool(self.gain_db or self.shift_s or self.noise_snr_db is not None or self.speed)


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


def default_augment() -> AugmentConfig:
    """The augmentation `fusionedge train` uses unless told otherwise.

    Chosen on real handwriting + real speech with the speaker held out, and on what a
    camera and a sliding microphone window present (benchmarks/real_av.py, figures and
    the settings compared in benchmarks/RESULTS.md):

    - audio: the utterance anywhere in the window (shift), another loudness (gain), a
      noisy room (noise), another speaking rate and pitch (speed), and SpecAugment
      masks. Together +8 points fused on unseen speakers, and the live-condition
      accuracy rose from 0.50 to 0.78.
    - image: half the samples show the object zoomed out on a background in another
      aspect ratio, as a camera frames it (+4.6 points live for 3 offline). All samples
      that way, or with blur, noise and colour jitter on top, and the image encoder no
      longer learnt the digits.

    The dataclasses' own defaults stay off, so a run folder's config.json written
    before these defaults existed reads back as the run that was trained.
    """
    return AugmentConfig(
        image=ImageAugment(zoom_out=0.6, framed=0.5, aspect=0.35),
        audio=AudioAugment(
            gain_db=12.0,
            shift_s=0.3,
            noise_snr_db=5.0,
            speed=0.1,
            spec_augment=SpecAugmentConfig(time_masks=2, time_width=8, freq_masks=2, freq_width=5),
        ),
    )


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
    if config.zoom_out or config.aspect:
        theta = torch.bmm(theta, framing(n, config, generator))
    return theta


def framing(n: int, config: ImageAugment, generator: torch.Generator) -> torch.Tensor:
    """[N, 3, 3] output -> object coordinates of an object placed in a larger view.

    The object's side is a fraction `size` of the view's (times an aspect factor per
    axis), centred at `centre`, drawn so that the whole object stays in view.
    """
    device = generator.device
    size = 1 - torch.rand((n, 1), generator=generator, device=device) * config.zoom_out
    stretch = math.log1p(config.aspect) * uniform(1.0, (n, 1), generator)
    # Squeeze one axis or the other, never both: the object keeps its area.
    per_axis = size * torch.cat([stretch.exp().sqrt(), (-stretch).exp().sqrt()], dim=1)
    per_axis = per_axis / per_axis.max(dim=1, keepdim=True).values.clamp(min=1)
    centre = uniform(1.0, (n, 2), generator) * (1 - per_axis)
    if config.framed < 1:
        unframed = torch.rand((n, 1), generator=generator, device=device) >= config.framed
        per_axis = torch.where(unframed, torch.ones_like(per_axis), per_axis)
        centre = torch.where(unframed, torch.zeros_like(centre), centre)
    inner = torch.zeros(n, 3, 3, device=device)
    inner[:, 0, 0], inner[:, 1, 1] = 1 / per_axis[:, 0], 1 / per_axis[:, 1]
    inner[:, :2, 2] = -centre / per_axis
    inner[:, 2, 2] = 1.0
    return inner


def backgrounds(shape: torch.Size, generator: torch.Generator) -> torch.Tensor:
    """Random scenes [N, 3, H, W] on the 0-255 scale: a colour, a gradient and noise."""
    n, _, h, w = shape
    device = generator.device
    colour = torch.rand((n, 3, 1, 1), generator=generator, device=device) * 255
    ys = torch.linspace(-1, 1, h, device=device).view(1, 1, h, 1)
    xs = torch.linspace(-1, 1, w, device=device).view(1, 1, 1, w)
    slope = uniform(40.0, (n, 2, 1, 1), generator)
    noise = torch.rand((n, 1, 1, 1), generator=generator, device=device) * 12
    grain = noise * torch.randn((n, 3, h, w), generator=generator, device=device)
    return (colour + slope[:, :1] * ys + slope[:, 1:] * xs + grain).clamp(0, 255)


def gaussian_blur(x: torch.Tensor, max_sigma: float, generator: torch.Generator) -> torch.Tensor:
    """Each image [N, C, H, W] blurred with its own sigma drawn from [0, max_sigma]."""
    n, c, h, w = x.shape
    sigma = torch.rand((n, 1), generator=generator, device=generator.device) * max_sigma
    radius = max(1, math.ceil(3 * max_sigma))
    offsets = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    kernel = torch.exp(-0.5 * (offsets / sigma.to(x.device).clamp(min=1e-3)) ** 2)
    kernel = (kernel / kernel.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)  # [N*C, K]
    flat = nn.functional.pad(x.reshape(1, n * c, h, w), (radius,) * 4, mode="replicate")
    flat = nn.functional.conv2d(flat, kernel.view(n * c, 1, -1, 1), groups=n * c)
    flat = nn.functional.conv2d(flat, kernel.view(n * c, 1, 1, -1), groups=n * c)
    return flat.view(n, c, h, w)


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
        if config.zoom_out:
            # The object on a scene: what falls outside the object is background.
            warped = nn.functional.grid_sample(x, grid, align_corners=False)
            inside = nn.functional.grid_sample(torch.ones_like(x[:, :1]), grid, align_corners=False)
            x = warped + (1 - inside) * backgrounds(x.shape, generator).to(x.device)
        else:
            x = nn.functional.grid_sample(x, grid, padding_mode="border", align_corners=False)
    if config.blur:
        x = gaussian_blur(x, config.blur, generator)
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
    if config.color_jitter or config.noise or config.zoom_out:
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
    if config.speed:
        x = change_speed(x, config.speed, generator)
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


def change_speed(audio: torch.Tensor, speed: float, generator: torch.Generator) -> torch.Tensor:
    """[N, S] played at a speed drawn from [1 - speed, 1 + speed] per sample, about the
    window's centre (linear interpolation; what leaves the window is lost, silence enters).
    """
    n, s = audio.shape
    factor = 1 + uniform(speed, (n, 1), generator).to(audio.device)
    centre = (s - 1) / 2
    source = (torch.arange(s, device=audio.device, dtype=audio.dtype) - centre) * factor + centre
    left = source.floor().long()
    frac = source - left
    inside = (left >= 0) & (left + 1 < s)
    a = audio.gather(1, left.clamp(0, s - 1))
    b = audio.gather(1, (left + 1).clamp(0, s - 1))
    return torch.where(inside, a + (b - a) * frac, audio.new_zeros(()))


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
