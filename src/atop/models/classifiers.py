"""Classifier registry. Every classifier takes [0, 1] images and normalises inside itself."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..io import CheckpointError, load_external_state_dict
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



# --------------------------------------------------------------------------- WideResNet (RobustBench layout)


class WideBasicBlock(nn.Module):
    """Pre-activation block; module names follow RobustBench so its state dicts load unchanged."""

    def __init__(self, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
        self.equal_in_out = in_planes == out_planes and stride == 1
        self.convShortcut = (
            None if self.equal_in_out else nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activated = self.relu1(self.bn1(x))
        out = self.conv2(self.relu2(self.bn2(self.conv1(activated))))
        shortcut = x if self.convShortcut is None else self.convShortcut(activated)
        return shortcut + out


class NetworkBlock(nn.Module):
    def __init__(self, layers: int, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        self.layer = nn.Sequential(
            *[WideBasicBlock(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1) for i in range(layers)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class WideResNet(nn.Module):
    """WRN-depth-width for 32x32 inputs (Zagoruyko & Komodakis; RobustBench's layout)."""

    def __init__(
        self,
        depth: int,
        widen_factor: int,
        num_classes: int,
        mean: Sequence[float],
        std: Sequence[float],
        in_channels: int = 3,
        image_size: int = 32,
    ) -> None:
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WideResNet depth must be 6n + 4, got {depth}")
        n = (depth - 4) // 6
        channels = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.normalize = Normalize(mean, std)
        self.conv1 = nn.Conv2d(in_channels, channels[0], 3, padding=1, bias=False)
        self.block1 = NetworkBlock(n, channels[0], channels[1], 1)
        self.block2 = NetworkBlock(n, channels[1], channels[2], 2)
        self.block3 = NetworkBlock(n, channels[2], channels[3], 2)
        self.bn1 = nn.BatchNorm2d(channels[3])
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(channels[3], num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.Linear):
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.block3(self.block2(self.block1(self.conv1(self.normalize(x)))))
        h = self.relu(self.bn1(h))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(h, 1), 1))


@CLASSIFIERS.register("wide_resnet")
def wide_resnet(depth: int = 28, widen_factor: int = 10, **kwargs) -> WideResNet:
    """Any WRN-depth-width (e.g. the shrunk presets' WRN-10-1: the same code path as WRN-28-10, in seconds)."""
    return WideResNet(depth=depth, widen_factor=widen_factor, **kwargs)


@CLASSIFIERS.register("wrn_28_10")
def wrn_28_10(**kwargs) -> WideResNet:
    return WideResNet(depth=28, widen_factor=10, **kwargs)


@CLASSIFIERS.register("wrn_70_16")
def wrn_70_16(**kwargs) -> WideResNet:
    return WideResNet(depth=70, widen_factor=16, **kwargs)


# --------------------------------------------------------------------------- ResNet


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = _projection(in_planes, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, 4 * planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(4 * planes)
        self.shortcut = _projection(in_planes, 4 * planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        return F.relu(self.bn3(self.conv3(out)) + self.shortcut(x))


def _projection(in_planes: int, out_planes: int, stride: int) -> nn.Module:
    if stride == 1 and in_planes == out_planes:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False), nn.BatchNorm2d(out_planes))


def _cifar_stem(in_channels: int) -> nn.Sequential:
    """3x3 conv, no pooling: 32x32 inputs keep their resolution into the first stage."""
    return nn.Sequential(nn.Conv2d(in_channels, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True))


def _imagenet_stem(in_channels: int) -> nn.Sequential:
    """7x7 stride-2 conv and 3x3 max-pool: the stem for ImageNette-size (e.g. 224 px) inputs."""
    return nn.Sequential(
        nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False),
        nn.BatchNorm2d(64),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, stride=2, padding=1),
    )


RESNET_STEMS = {"cifar": _cifar_stem, "imagenet": _imagenet_stem}


class ResNet(nn.Module):
    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: Sequence[int],
        num_classes: int,
        mean: Sequence[float],
        std: Sequence[float],
        stem: str = "cifar",
        in_channels: int = 3,
        image_size: int = 32,
    ) -> None:
        super().__init__()
        if stem not in RESNET_STEMS:
            raise ValueError(f"unknown ResNet stem {stem!r}; known: {', '.join(sorted(RESNET_STEMS))}")
        self.normalize = Normalize(mean, std)
        self.stem = RESNET_STEMS[stem](in_channels)
        stages, in_planes = [], 64
        for i, (planes, blocks) in enumerate(zip((64, 128, 256, 512), layers)):
            stage = []
            for j in range(blocks):
                stage.append(block(in_planes, planes, 2 if i > 0 and j == 0 else 1))
                in_planes = planes * block.expansion
            stages.append(nn.Sequential(*stage))
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Linear(in_planes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stages(self.stem(self.normalize(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(h, 1), 1))


@CLASSIFIERS.register("resnet18")
def resnet18(**kwargs) -> ResNet:
    return ResNet(BasicBlock, (2, 2, 2, 2), **kwargs)


@CLASSIFIERS.register("resnet34")
def resnet34(**kwargs) -> ResNet:
    return ResNet(BasicBlock, (3, 4, 6, 3), **kwargs)


@CLASSIFIERS.register("resnet50")
def resnet50(**kwargs) -> ResNet:
    return ResNet(Bottleneck, (3, 4, 6, 3), **kwargs)


# --------------------------------------------------------------------------- RobustBench checkpoints


ROBUSTBENCH_ARCHS = ("wrn_28_10", "wrn_70_16")


def load_robustbench_classifier(
    path: str | Path, sha256: str, arch: str, num_classes: int, image_size: int
) -> tuple[nn.Module, dict]:
    """A RobustBench WideResNet state dict (e.g. CIFAR-10 ``Standard``) as a registry classifier.

    RobustBench's ``Standard`` WRN-28-10 was trained on unnormalised [0, 1]
    inputs, so the classifier gets mean 0 / std 1: it still takes [0, 1] images
    and its Normalize is the identity. ``sub_block1`` keys, present in some
    RobustBench files but unused by their forward pass, are dropped.
    Returns ``(model, model_meta)``; a wrong checksum or key set is a
    :class:`CheckpointError`.
    """
    path = Path(path)
    if arch not in ROBUSTBENCH_ARCHS:
        raise ValueError(f"RobustBench checkpoints fit {', '.join(ROBUSTBENCH_ARCHS)}, not classifier.arch {arch!r}")
    state = load_external_state_dict(path, sha256, "RobustBench checkpoint")
    state = {key.removeprefix("module."): value for key, value in state.items() if not key.startswith(("sub_block1.", "module.sub_block1."))}
    channels = 3
    model_meta = {
        "arch": arch,
        "num_classes": num_classes,
        "mean": [0.0] * channels,
        "std": [1.0] * channels,
        "image_size": image_size,
    }
    model = build_classifier(**model_meta)
    expected = {key for key in model.state_dict() if not key.startswith("normalize.")}
    missing, unexpected = sorted(expected - state.keys()), sorted(state.keys() - expected)
    if missing or unexpected:
        raise CheckpointError(
            f"{path} does not fit {arch} (RobustBench layout): missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}"
        )
    try:
        model.load_state_dict(state, strict=False)
    except RuntimeError as error:
        raise CheckpointError(f"{path} does not fit {arch} with {num_classes} classes: {error}") from error
    return model.eval(), model_meta


def build_classifier(arch: str, num_classes: int, mean, std, image_size: int, **kwargs) -> nn.Module:
    return CLASSIFIERS[arch](num_classes=num_classes, mean=mean, std=std, image_size=image_size, **kwargs)
