"""The plain late-fusion baseline that fusionedge's defaults must beat on real data.

What a careful engineer writes in an afternoon: one small CNN per modality (the audio one
on a log-mel normalised per utterance), their pooled features concatenated into one
linear layer, AdamW with a one-cycle schedule for a fixed number of epochs, no modality
dropout, no augmentation, no early stopping. It trains on exactly the arrays fusionedge
decodes for the same split, so the comparison is of modelling and training, not of data.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from fusionedge.arrays import SampleArrays
from fusionedge.spec import AudioSpec
from fusionedge.training.frontend import LogMel


def cnn(in_channels: int, widths: tuple[int, ...]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for width in widths:
        layers += [
            nn.Conv2d(in_channels, width, 3, 2, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        ]
        in_channels = width
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())


class LateFusion(nn.Module):
    def __init__(self, audio: AudioSpec, num_classes: int) -> None:
        super().__init__()
        self.logmel = LogMel(audio)
        self.image = cnn(3, (32, 64, 128))
        self.audio = cnn(1, (16, 32, 64, 128))
        self.head = nn.Linear(128 + 128, num_classes)

    def forward(self, image: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        x = image.permute(0, 3, 1, 2).float() / 127.5 - 1
        mel = self.logmel(audio)
        mel = (mel - mel.mean(dim=(2, 3), keepdim=True)) / (
            mel.std(dim=(2, 3), keepdim=True) + 1e-5
        )
        return self.head(torch.cat([self.image(x), self.audio(mel)], dim=1))


def train_baseline(
    train: SampleArrays,
    audio: AudioSpec,
    num_classes: int,
    epochs: int = 15,
    batch_size: int = 64,
    lr: float = 3e-3,
    seed: int = 0,
) -> LateFusion:
    torch.manual_seed(seed)
    model = LateFusion(audio, num_classes)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-2)
    steps = epochs * -(-len(train) // batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps)
    images, sounds = torch.from_numpy(train.image), torch.from_numpy(train.audio)
    targets = torch.from_numpy(train.targets)
    rng = np.random.default_rng(seed)
    model.train()
    for _ in range(epochs):
        order = torch.from_numpy(rng.permutation(len(train)))
        for start in range(0, len(train), batch_size):
            idx = order[start : start + batch_size]
            loss = nn.functional.cross_entropy(model(images[idx], sounds[idx]), targets[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    return model.eval()


@torch.no_grad()
def accuracy(model: LateFusion, samples: SampleArrays, batch_size: int = 256) -> float:
    correct = 0
    for start in range(0, len(samples), batch_size):
        part = slice(start, start + batch_size)
        logits = model(torch.from_numpy(samples.image[part]), torch.from_numpy(samples.audio[part]))
        correct += int((logits.argmax(1).numpy() == samples.targets[part]).sum())
    return correct / len(samples)
