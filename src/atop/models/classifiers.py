"""Classifier registry. Every classifier takes [0, 1] images and normalises inside itself."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..registry import Registry

CLASSIFIERS: Registry = Registry("classifier")


class Normalize(nn.Module):
    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


@CLASSIFIERS.register("small_cnn")
class SmallCNN(nn.Module):
    """Two conv blocks and two linear layers: the tiny default's classifier."""

    def __init__(
        self,
        num_classes: int,
        mean: Sequence[float],
        std: Sequence[float],
        in_channels: int = 3,
        width: int = 32,
        image_size: int = 32,
    ) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        feature_size = 2 * width * (image_size // 4) ** 2
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(feature_size, 128), nn.ReLU(inplace=True), nn.Linear(128, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(self.normalize(x)))


def build_classifier(arch: str, num_classes: int, mean, std, image_size: int, **kwargs) -> nn.Module:
    return CLASSIFIERS[arch](num_classes=num_classes, mean=mean, std=std, image_size=image_size, **kwargs)
