"""Training-time augmentation, done on the batch in torch (never part of the exported graph)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class AugmentConfig:
    """Random per-sample geometry for images; 0 turns a part off.

    Attributes:
        image_rotate_deg: Rotation drawn from [-x, x] degrees.
        image_scale: Zoom drawn from [1 - x, 1 + x].
        image_translate: Shift drawn from [-x, x] of the image size, per axis.
    """

    image_rotate_deg: float = 12.0
    image_scale: float = 0.1
    image_translate: float = 0.1

    @property
    def image_enabled(self) -> bool:
        return bool(self.image_rotate_deg or self.image_scale or self.image_translate)


def augment_images(
    images: torch.Tensor, config: AugmentConfig, generator: torch.Generator
) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> float32 [N, H, W, 3] on the 0-255 scale, randomly warped.

    One affine grid_sample for the whole batch: a few milliseconds on CPU for 64 small
    images, where per-image OpenCV warps in Python would cost more than the model step.
    """
    n = images.shape[0]

    def uniform(scale: float, *shape: int) -> torch.Tensor:
        return (torch.rand(*shape, generator=generator) * 2 - 1) * scale

    angle = uniform(math.radians(config.image_rotate_deg), n)
    zoom = 1 + uniform(config.image_scale, n)
    shift = uniform(2 * config.image_translate, n, 2)  # grid coordinates span [-1, 1]
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack(
        [torch.stack([cos, -sin, shift[:, 0]], dim=1), torch.stack([sin, cos, shift[:, 1]], dim=1)],
        dim=1,
    )
    x = images.permute(0, 3, 1, 2).float()
    grid = nn.functional.affine_grid(theta.to(x.device), list(x.shape), align_corners=False)
    warped = nn.functional.grid_sample(x, grid, padding_mode="border", align_corners=False)
    return warped.permute(0, 2, 3, 1)
