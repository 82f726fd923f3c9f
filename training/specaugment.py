"""SpecAugment: random time and frequency masks on the log-mel, in training mode only.

The masks live inside the audio encoder (after the log-mel, before its normalisation)
because the log-mel is computed in the graph: there is nothing to mask before the model.
The module has no parameters or buffers, so checkpoints do not change, and the encoder
calls it only while training: an exported (eval mode) graph never contains it.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from fusionedge.training.augment import SpecAugmentConfig

log = logging.getLogger(__name__)


def band_mask(n: int, count: int, max_width: int, size: int, device: torch.device) -> torch.Tensor:
    """bool [N, size]: the union of `count` bands per row, widths drawn from [0, max_width].

    Uses torch's global RNG, as dropout does: it is seeded by the run's seed and saved in
    each checkpoint, so a resumed CPU run draws the same masks.
    """
    width = torch.randint(0, min(max_width, size) + 1, (n, count, 1), device=device)
    start = (torch.rand((n, count, 1), device=device) * (size - width + 1)).long()
    position = torch.arange(size, device=device).view(1, 1, size)
    return ((position >= start) & (position < start + width)).any(dim=1)


class SpecAugment(nn.Module):
    """log-mel [N, 1, n_mels, frames] -> the same with masked bands set to the sample's mean."""

    def __init__(self, config: SpecAugmentConfig) -> None:
        super().__init__()
        self.config = config

    def forward(self, logmel: torch.Tensor) -> torch.Tensor:
        if not self.training or not self.config.enabled:
            return logmel
        c = self.config
        n, _, mels, frames = logmel.shape
        mask = torch.zeros(n, mels, frames, dtype=torch.bool, device=logmel.device)
        if c.freq_masks and c.freq_width:
            mask |= band_mask(n, c.freq_masks, c.freq_width, mels, logmel.device).unsqueeze(2)
        if c.time_masks and c.time_width:
            mask |= band_mask(n, c.time_masks, c.time_width, frames, logmel.device).unsqueeze(1)
        # The mean, not 0: log-mel values sit far from 0 before the encoder's BatchNorm,
        # and a mask at the sample's own level reads as "no information", not as a loud band.
        fill = logmel.mean(dim=(1, 2, 3), keepdim=True)
        return torch.where(mask.unsqueeze(1), fill, logmel)


def attach_spec_augment(model: nn.Module, config: SpecAugmentConfig) -> int:
    """Puts SpecAugment into every audio encoder of model that has the hook.

    An encoder has the hook when it has a `spec_augment` attribute (MelEncoder does);
    returns how many got it, and warns when masks were asked for and none could take them.
    """
    if not config.enabled:
        return 0
    hooked = 0
    for module in model.modules():
        if hasattr(module, "spec_augment") and not isinstance(module, SpecAugment):
            module.spec_augment = SpecAugment(config)
            hooked += 1
    if not hooked:
        log.warning("augment.audio.spec_augment is set but no audio encoder takes it: ignored")
    return hooked
