"""Random transforms (RT) that destroy adversarial structure before purification.

Each transform maps images in [0, 1] to ``(x_t, mask)``: the transformed
image and a binary mask (1 = pixel removed, 0 = kept) of shape (N, 1, H, W).
Randomness comes from the transform's own ``torch.Generator`` so a run can be
seeded without touching the global RNG (which torchattacks resets). A fresh
mask is drawn per call and per image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .registry import Registry

TRANSFORMS: Registry = Registry("transform")


class RandomTransform(nn.Module):
    randomized = True

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.seed = seed
        self._generator: torch.Generator | None = None

    def reseed(self, seed: int) -> None:
        self.seed = seed
        self._generator = None

    def generator(self, device: torch.device) -> torch.Generator:
        if self._generator is None or self._generator.device != device:
            self._generator = torch.Generator(device=device).manual_seed(self.seed)
        return self._generator


def block_mask(
    n: int, height: int, width: int, grid: int, rate: float, generator: torch.Generator, device
) -> torch.Tensor:
    """Mask exactly ``round(rate * grid**2)`` of the grid's blocks in each image."""
    blocks = grid * grid
    k = round(rate * blocks)
    scores = torch.rand(n, blocks, generator=generator, device=device)
    chosen = scores.argsort(dim=1)[:, :k]
    flat = torch.zeros(n, blocks, device=device).scatter_(1, chosen, 1.0)
    return F.interpolate(flat.view(n, 1, grid, grid), size=(height, width), mode="nearest")


@TRANSFORMS.register("rt1")
class MaskTransform(RandomTransform):
    """RT1: remove a random set of square patches."""

    def __init__(self, grid: int = 8, mask_rate: float = 0.25, seed: int = 0, **_: object) -> None:
        super().__init__(seed)
        self.grid = grid
        self.mask_rate = mask_rate

    def mask_for(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        return block_mask(n, h, w, self.grid, self.mask_rate, self.generator(x.device), x.device)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mask = self.mask_for(x)
        return x * (1 - mask), mask


@TRANSFORMS.register("rt2")
class NoiseMaskTransform(MaskTransform):
    """RT2: Gaussian noise, clipped to [0, 1], then the RT1 mask."""

    def __init__(self, noise_std: float = 0.25, grid: int = 8, mask_rate: float = 0.25, seed: int = 0, **_: object):
        super().__init__(grid=grid, mask_rate=mask_rate, seed=seed)
        self.noise_std = noise_std

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        noise = torch.randn(x.shape, generator=self.generator(x.device), device=x.device)
        noisy = (x + self.noise_std * noise).clamp(0, 1)
        return super().forward(noisy)


def build_transform(name: str, seed: int = 0, **params) -> RandomTransform:
    return TRANSFORMS[name](seed=seed, **params)
