"""Purifier registry: generative models that restore an RT-transformed image.

A generator takes ``(x_t, mask)`` - the transformed image in [0, 1] and the
binary mask (1 = pixel removed) - and returns a clean image in [0, 1]. A
discriminator, where the purifier has one, scores (image, mask) patches.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from ..registry import Registry

PURIFIERS: Registry = Registry("purifier")


@dataclass
class PurifierParts:
    generator: nn.Module
    discriminator: nn.Module | None

    def as_module(self) -> nn.ModuleDict:
        """Generator and discriminator as one module, so one state dict holds both."""
        modules = {"generator": self.generator}
        if self.discriminator is not None:
            modules["discriminator"] = self.discriminator
        return nn.ModuleDict(modules)


def _conv(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation), nn.ELU(inplace=True)
    )


class InpaintingUNet(nn.Module):
    """Small inpainting generator: U-Net with a dilated bottleneck for context.

    Input channels follow DeepFill: the transformed RGB image, a ones channel
    (lets the first convolution find image borders) and the mask.
    """

    def __init__(self, base_channels: int = 16, in_channels: int = 3) -> None:
        super().__init__()
        c = base_channels
        self.enc1 = _conv(in_channels + 2, c)
        self.enc2 = _conv(c, 2 * c, stride=2)
        self.enc3 = _conv(2 * c, 4 * c, stride=2)
        self.context = nn.Sequential(
            _conv(4 * c, 4 * c, dilation=2), _conv(4 * c, 4 * c, dilation=4), _conv(4 * c, 4 * c)
        )
        self.up2 = nn.Upsample(scale_factor=2, mode="nearest")
        self.dec2 = _conv(4 * c + 2 * c, 2 * c)
        self.dec1 = _conv(2 * c + c, c)
        self.out = nn.Conv2d(c, in_channels, 3, padding=1)

    def forward(self, x_t: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        ones = torch.ones_like(mask)
        e1 = self.enc1(torch.cat([x_t, ones, mask], dim=1))
        e2 = self.enc2(e1)
        h = self.context(self.enc3(e2))
        h = self.dec2(torch.cat([self.up2(h), e2], dim=1))
        h = self.dec1(torch.cat([self.up2(h), e1], dim=1))
        return torch.sigmoid(self.out(h))


class PatchDiscriminator(nn.Module):
    """Spectral-normalised conv stack scoring overlapping patches (SN-PatchGAN style)."""

    def __init__(self, base_channels: int = 16, in_channels: int = 3) -> None:
        super().__init__()
        c = base_channels
        layers: list[nn.Module] = []
        widths = [in_channels + 1, c, 2 * c, 4 * c]
        for cin, cout in zip(widths[:-1], widths[1:]):
            layers += [spectral_norm(nn.Conv2d(cin, cout, 4, stride=2, padding=1)), nn.LeakyReLU(0.2, inplace=True)]
        layers.append(spectral_norm(nn.Conv2d(4 * c, 1, 3, padding=1)))
        self.net = nn.Sequential(*layers)

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([image, mask], dim=1))


@PURIFIERS.register("gan_unet")
def gan_unet(base_channels: int = 16, in_channels: int = 3) -> PurifierParts:
    return PurifierParts(
        generator=InpaintingUNet(base_channels, in_channels),
        discriminator=PatchDiscriminator(base_channels, in_channels),
    )


def build_purifier(arch: str, **kwargs) -> PurifierParts:
    return PURIFIERS[arch](**kwargs)
