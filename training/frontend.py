"""The log-mel front end, computed inside the model graph.

The DFT is a strided Conv1d with fixed cosine and sine kernels followed by a mel MatMul,
not ONNX's STFT op: ONNX Runtime has no CUDA kernel for STFT and runs it far slower on
CPU (docs/ARCHITECTURE.md, "Known pitfalls"). Every op here is a plain Conv/Mul/Add/MatMul/Log, so
the whole graph stays on one execution provider.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from fusionedge.spec import AudioSpec


def mel_filterbank(spec: AudioSpec) -> np.ndarray:
    """Triangular HTK-mel filters, float32 [n_fft // 2 + 1, n_mels], Slaney-normalised."""
    f_max = spec.f_max if spec.f_max is not None else spec.sample_rate / 2

    def hz_to_mel(f: np.ndarray) -> np.ndarray:
        return 2595.0 * np.log10(1.0 + f / 700.0)

    def mel_to_hz(m: np.ndarray) -> np.ndarray:
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)

    bins = np.linspace(0, spec.sample_rate / 2, spec.n_fft // 2 + 1)
    edges = mel_to_hz(
        np.linspace(hz_to_mel(np.array(spec.f_min)), hz_to_mel(np.array(f_max)), spec.n_mels + 2)
    )
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins[None, :] - lower) / (centre - lower)
    falling = (upper - bins[None, :]) / (upper - centre)
    filters = np.maximum(0.0, np.minimum(rising, falling))
    # Equal-area filters keep wide high-frequency bands from dominating the spectrum.
    filters *= 2.0 / (upper - lower)
    return filters.T.astype(np.float32)


class LogMel(nn.Module):
    """float32 PCM [N, S] -> log-mel [N, 1, n_mels, frames] (no centre padding)."""

    def __init__(self, spec: AudioSpec) -> None:
        super().__init__()
        self.spec = spec
        n = np.arange(spec.n_fft)
        k = np.arange(spec.n_fft // 2 + 1)[:, None]
        window = 0.5 - 0.5 * np.cos(2 * math.pi * n / spec.n_fft)  # periodic Hann
        phase = 2 * math.pi * k * n / spec.n_fft
        kernels = np.concatenate([window * np.cos(phase), -window * np.sin(phase)])
        self.register_buffer("dft", torch.from_numpy(kernels.astype(np.float32))[:, None, :])
        self.register_buffer("mel", torch.from_numpy(mel_filterbank(spec)))
        self.bins = spec.n_fft // 2 + 1

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        # Power spectra span many decades: fp16 autocast would flush the quiet bins.
        with torch.autocast(device_type=audio.device.type, enabled=False):
            x = audio.float().unsqueeze(1)
            spectrum = nn.functional.conv1d(x, self.dft, stride=self.spec.hop_length)
            real, imag = spectrum[:, : self.bins], spectrum[:, self.bins :]
            power = real * real + imag * imag  # [N, bins, frames]
            mel = torch.matmul(power.transpose(1, 2), self.mel)  # [N, frames, n_mels]
            return torch.log(mel + self.spec.log_floor).transpose(1, 2).unsqueeze(1)
