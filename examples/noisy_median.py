"""A small purification defense of your own, as config/examples/custom-defense.yaml plugs it in.

Gaussian noise, then a median filter, then this project's standard classifier: a randomized
input-purification defense in the spirit of randomized smoothing and median-filter purifiers.
The workflow calls ``build(classifier=..., weights=..., **params)`` (custom_defenses.py) and
evaluates the module it returns like AP and AToP: attacks with EOT, draws, checks, diagnostics,
paired verdicts. Inputs are [0, 1] images (N, C, H, W); the output is logits (N, classes).

The median is differentiable almost everywhere (its gradient flows to the median pixel), so
full-gradient attacks reach through it; the noise makes it randomized (declared in the config).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class NoisyMedian(nn.Module):
    def __init__(self, classifier: nn.Module, noise_std: float, kernel: int) -> None:
        super().__init__()
        if kernel < 1 or kernel % 2 == 0:
            raise ValueError(f"kernel must be an odd positive size, not {kernel}")
        self.classifier, self.noise_std, self.kernel = classifier, float(noise_std), int(kernel)

    def purify(self, x: torch.Tensor) -> torch.Tensor:
        noisy = (x + self.noise_std * torch.randn_like(x)).clamp(0, 1)
        pad = self.kernel // 2
        patches = F.unfold(F.pad(noisy, (pad,) * 4, mode="reflect"), self.kernel)  # (N, C*k*k, H*W)
        n, c, h, w = x.shape
        patches = patches.view(n, c, self.kernel * self.kernel, h * w)
        return patches.median(dim=2).values.view(n, c, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.purify(x))


def build(classifier: nn.Module | None, weights: dict | None, noise_std: float = 0.1, kernel: int = 3) -> nn.Module:
    if classifier is None:
        raise ValueError("noisy_median puts a classifier behind the filter: set classifier: standard in its entry")
    if weights is not None:
        raise ValueError("noisy_median has no weights of its own")
    return NoisyMedian(classifier, noise_std, kernel)
