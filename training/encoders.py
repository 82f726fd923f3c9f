"""Per-modality encoders: each maps one input to an [N, embed_dim] embedding.

Every encoder is built by name from its registry with the spec section of its modality
and embed_dim, plus the optional keyword arguments the user put in the config.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from fusionedge.spec import AudioSpec, ImageSpec, TextSpec
from fusionedge.tokenizer import PAD_ID
from fusionedge.training.frontend import LogMel
from fusionedge.training.registry import AUDIO_ENCODERS, IMAGE_ENCODERS, TEXT_ENCODERS


def conv_bn(cin: int, cout: int, stride: int = 1, groups: int = 1, kernel: int = 3) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def small_cnn(in_channels: int, width: int, depth: int) -> tuple[nn.Module, int]:
    """One strided 3x3 conv per stage, doubling channels: the dependable baseline.

    A second stride-1 conv per stage (VGG style) tripled the training time on a 2-core
    CPU for no accuracy on the demo data; `depth` adds stages instead.
    """
    layers, c = [], in_channels
    for i in range(depth):
        out = width * 2**i
        layers.append(conv_bn(c, out, stride=2))
        c = out
    return nn.Sequential(*layers), c


def mobile_cnn(in_channels: int, width: int, depth: int) -> tuple[nn.Module, int]:
    """Depthwise-separable stages (MobileNetV1): fewer multiply-adds per pixel."""
    layers, c = [conv_bn(in_channels, width, stride=2)], width
    for i in range(depth):
        out = width * 2 ** (i + 1)
        layers += [conv_bn(c, c, stride=2, groups=c), conv_bn(c, out, kernel=1)]
        c = out
    return nn.Sequential(*layers), c


class PooledCNN(nn.Module):
    """A CNN trunk, global average pooling and a projection to embed_dim."""

    def __init__(self, trunk: nn.Module, channels: int, embed_dim: int) -> None:
        super().__init__()
        self.trunk = trunk
        self.proj = nn.Linear(channels, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.trunk(x).mean(dim=(2, 3)))


class ImageEncoder(nn.Module):
    """uint8 RGB [N, H, W, 3] -> [N, D]; the normalisation of the spec happens here, in-graph."""

    def __init__(self, spec: ImageSpec, cnn: PooledCNN) -> None:
        super().__init__()
        mean = torch.tensor(spec.mean).view(1, 3, 1, 1) * 255.0
        std = torch.tensor(spec.std).view(1, 3, 1, 1) * 255.0
        self.register_buffer("mean", mean)
        self.register_buffer("inv_std", 1.0 / std)
        self.cnn = cnn

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = image.permute(0, 3, 1, 2).float()
        return self.cnn((x - self.mean) * self.inv_std)

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any) -> None:
        # The normalisation is written twice in a model file: in the spec (the metadata)
        # and in these buffers (the graph). Weights whose buffers disagree with their spec
        # would export a file that says one normalisation and applies another.
        for name in ("mean", "inv_std"):
            given = state_dict.get(prefix + name)
            if given is not None and not torch.allclose(given, getattr(self, name)):
                raise RuntimeError(
                    f"{prefix}{name} is {given.flatten().tolist()} in the weights but "
                    f"{getattr(self, name).flatten().tolist()} from the spec's image mean/std"
                )
        super()._load_from_state_dict(state_dict, prefix, *args)


@IMAGE_ENCODERS.register("small_cnn")
def small_cnn_image(spec: ImageSpec, embed_dim: int, width: int = 32, depth: int = 4) -> nn.Module:
    trunk, c = small_cnn(3, width, depth)
    return ImageEncoder(spec, PooledCNN(trunk, c, embed_dim))


@IMAGE_ENCODERS.register("mobile_cnn")
def mobile_cnn_image(spec: ImageSpec, embed_dim: int, width: int = 16, depth: int = 3) -> nn.Module:
    trunk, c = mobile_cnn(3, width, depth)
    return ImageEncoder(spec, PooledCNN(trunk, c, embed_dim))


class MelEncoder(nn.Module):
    """float32 PCM [N, S] -> log-mel -> a CNN -> [N, D]."""

    def __init__(self, spec: AudioSpec, body: nn.Module) -> None:
        super().__init__()
        self.spec = spec
        self.logmel = LogMel(spec)
        # Log-mel values sit around -10..+5 whatever the gain; BatchNorm over the one input
        # channel learns that offset and scale instead of a hand-picked constant.
        self.norm = nn.BatchNorm2d(1)
        self.body = body
        # Set by the trainer (training/specaugment.py) when masks are configured; run in
        # training mode only, so neither checkpoints nor the exported graph contain it.
        self.spec_augment: nn.Module | None = None

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return self.encode_logmel(self.logmel(audio))

    def encode_logmel(self, logmel: torch.Tensor) -> torch.Tensor:
        """Everything after the front end (the split export's audio part runs this)."""
        x = logmel
        if self.spec.normalize != "none":
            x = normalize_window(x, per_band=self.spec.normalize == "bands")
        if self.training and self.spec_augment is not None:
            x = self.spec_augment(x)
        return self.body(self.norm(x))


def normalize_window(
    logmel: torch.Tensor, per_band: bool = False, eps: float = 1e-3
) -> torch.Tensor:
    """Log-mel [N, 1, bands, frames] less its mean over the window (each band's own mean
    with per_band), divided by the window's standard deviation.

    A gain is the same offset on every log-mel value, and a microphone's frequency
    response an offset per band: removing the mean cancels the first, the per-band mean
    both (cepstral mean normalisation), but the per-band mean also erases whatever is
    steady in a band, such as a tone. Statistics are of this window only, so the live loop
    and the exported graph need no running state.
    """
    dims = (3,) if per_band else (2, 3)
    x = logmel - logmel.mean(dim=dims, keepdim=True)
    return x / (x.pow(2).mean(dim=(2, 3), keepdim=True) + eps).sqrt()


@AUDIO_ENCODERS.register("mel_cnn")
def mel_cnn(spec: AudioSpec, embed_dim: int, width: int = 16, depth: int = 4) -> nn.Module:
    trunk, c = small_cnn(1, width, depth)
    return MelEncoder(spec, PooledCNN(trunk, c, embed_dim))


class TemporalConv(nn.Module):
    """Mel bands as channels, 1-D convolutions over time: cheap and streaming-friendly."""

    def __init__(self, n_mels: int, width: int, depth: int, embed_dim: int) -> None:
        super().__init__()
        layers, c = [], n_mels
        for i in range(depth):
            out = width * 2**i
            layers += [
                nn.Conv1d(c, out, 5, stride=2, padding=2, bias=False),
                nn.BatchNorm1d(out),
                nn.ReLU(inplace=True),
            ]
            c = out
        self.trunk = nn.Sequential(*layers)
        self.proj = nn.Linear(c, embed_dim)

    def forward(self, logmel: torch.Tensor) -> torch.Tensor:
        return self.proj(self.trunk(logmel.squeeze(1)).mean(dim=2))


@AUDIO_ENCODERS.register("mel_conv1d")
def mel_conv1d(spec: AudioSpec, embed_dim: int, width: int = 64, depth: int = 3) -> nn.Module:
    return MelEncoder(spec, TemporalConv(spec.n_mels, width, depth, embed_dim))


def valid_mask(tokens: torch.Tensor) -> torch.Tensor:
    """bool [N, L], True at real tokens. Position 0 always counts, so an empty row
    (text absent: all padding) still pools over one position instead of dividing by 0."""
    mask = tokens != PAD_ID
    first = torch.zeros_like(mask)
    first[:, 0] = True
    return mask | first


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weights = mask.unsqueeze(-1).to(x.dtype)
    return (x * weights).sum(dim=1) / weights.sum(dim=1)


class GRUText(nn.Module):
    """Token embedding + GRU; the output at the last real token plus the masked mean."""

    def __init__(self, spec: TextSpec, embed_dim: int, width: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(spec.tokenizer.vocab_size, width, padding_idx=PAD_ID)
        self.gru = nn.GRU(width, width, batch_first=True)
        self.proj = nn.Linear(2 * width, embed_dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        mask = valid_mask(tokens)
        # No packed sequences (they do not export); padding sits at the end, so the
        # output at the last real token is the state after reading exactly the text.
        out, _ = self.gru(self.embed(tokens))
        last = (mask.sum(dim=1) - 1).view(-1, 1, 1).expand(-1, 1, out.shape[2])
        final = out.gather(1, last).squeeze(1)
        return self.proj(torch.cat([final, masked_mean(out, mask)], dim=1))


@TEXT_ENCODERS.register("gru")
def gru_text(spec: TextSpec, embed_dim: int, width: int = 64) -> nn.Module:
    return GRUText(spec, embed_dim, width)


class TransformerText(nn.Module):
    """Token + position embeddings, a small pre-norm Transformer encoder, masked mean."""

    def __init__(
        self, spec: TextSpec, embed_dim: int, width: int, layers: int, heads: int, dropout: float
    ) -> None:
        super().__init__()
        self.embed = nn.Embedding(spec.tokenizer.vocab_size, width, padding_idx=PAD_ID)
        self.position = nn.Parameter(torch.zeros(1, spec.max_length, width))
        nn.init.normal_(self.position, std=0.02)
        layer = nn.TransformerEncoderLayer(
            width, heads, 2 * width, dropout, batch_first=True, norm_first=True
        )
        # enable_nested_tensor=False: the nested-tensor fast path is an inference-only
        # kernel that neither autograd nor the ONNX exporter sees the same way.
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.proj = nn.Linear(width, embed_dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        mask = valid_mask(tokens)
        x = self.encoder(self.embed(tokens) + self.position, src_key_padding_mask=~mask)
        return self.proj(masked_mean(self.norm(x), mask))


@TEXT_ENCODERS.register("transformer")
def transformer_text(
    spec: TextSpec,
    embed_dim: int,
    width: int = 64,
    layers: int = 2,
    heads: int = 4,
    dropout: float = 0.1,
) -> nn.Module:
    return TransformerText(spec, embed_dim, width, layers, heads, dropout)
