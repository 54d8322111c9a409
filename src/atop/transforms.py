"""Random transforms (RT) that destroy adversarial structure before purification.

Each transform maps images in [0, 1] to ``(x_t, mask)``: the transformed
image and a binary mask (1 = pixel removed, 0 = kept) of shape (N, 1, H, W);
that pair is what a purifier is trained on. ``purify(purifier, x)`` is how the
defended model uses the transform: one inpainting for RT1 / RT2, several
disjointly masked copies combined into one image for RT3.
Randomness comes from the transform's own ``torch.Generator`` so a run can be
seeded without touching the global RNG (which torchattacks resets). A fresh
mask is drawn per call and per image.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .registry import Registry

Purifier = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

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

    def purify(self, purifier: Purifier, x: torch.Tensor) -> torch.Tensor:
        """The purified image: one transformed copy, inpainted."""
        return purifier(*self(x))


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


def partition_masks(
    n: int, height: int, width: int, grid: int, parts: int, generator: torch.Generator, device
) -> torch.Tensor:
    """(parts, N, 1, H, W) disjoint block masks whose union is the whole image.

    Each image's blocks are shuffled and dealt into ``parts`` groups of sizes that
    differ by at most one (grid 8, 4 parts: 16 blocks, 25 %, each).
    """
    blocks = grid * grid
    if not 1 <= parts <= blocks:
        raise ValueError(f"cannot split {blocks} blocks into {parts} disjoint masks")
    rank = torch.rand(n, blocks, generator=generator, device=device).argsort(dim=1).argsort(dim=1)
    group = rank * parts // blocks  # block -> its group, by its position in the shuffled order
    onehot = F.one_hot(group, parts).permute(2, 0, 1).float()  # (parts, N, blocks)
    masks = F.interpolate(onehot.reshape(parts * n, 1, grid, grid), size=(height, width), mode="nearest")
    return masks.view(parts, n, 1, height, width)


@TRANSFORMS.register("rt3")
class DisjointMasksTransform(RandomTransform):
    """RT3: Gaussian noise, then ``copies`` disjoint block masks that together cover the image.

    For purification every masked copy is inpainted and each pixel is taken from
    the copy that had it masked, so every output pixel was generated, none copied.
    As a training pair, ``forward`` returns the noisy image under one of the masks.
    """

    def __init__(self, noise_std: float = 0.25, grid: int = 8, copies: int = 4, seed: int = 0, **_: object):
        super().__init__(seed)
        self.noise_std = noise_std
        self.grid = grid
        self.copies = copies

    def _noisy_copies(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        generator = self.generator(x.device)
        noise = torch.randn(x.shape, generator=generator, device=x.device)
        noisy = (x + self.noise_std * noise).clamp(0, 1)
        n, _, h, w = x.shape
        return noisy, partition_masks(n, h, w, self.grid, self.copies, generator, x.device)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        noisy, masks = self._noisy_copies(x)
        pick = torch.randint(self.copies, (len(x),), generator=self.generator(x.device), device=x.device)
        mask = masks[pick, torch.arange(len(x), device=x.device)]
        return noisy * (1 - mask), mask

    def purify(self, purifier: Purifier, x: torch.Tensor) -> torch.Tensor:
        noisy, masks = self._noisy_copies(x)
        flat = masks.flatten(0, 1)  # (copies * N, 1, H, W), copy-major
        inpainted = purifier(noisy.repeat(self.copies, 1, 1, 1) * (1 - flat), flat)
        return (inpainted.view(self.copies, *x.shape) * masks).sum(dim=0)


def build_transform(name: str, seed: int = 0, **params) -> RandomTransform:
    return TRANSFORMS[name](seed=seed, **params)
