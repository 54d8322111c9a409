"""BPDA with the purifier's backward pass as the identity (the paper's ablation protocol).

The forward pass is the full defended model; the backward pass skips the
random transform and the purifier, so the gradient is the classifier's,
taken at the purified image. Results of attacks through this wrapper are an
UPPER BOUND on robustness, never the defense's robustness.
"""

from __future__ import annotations

import torch
from torch import nn


class IdentityBackwardDefense(nn.Module):
    def __init__(self, defense: nn.Module) -> None:
        super().__init__()
        self.defense = defense

    @property
    def randomized(self) -> bool:
        return self.defense.randomized

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        purified = self.defense.purify(x)
        # Straight-through: the value of purified, the gradient of x.
        return self.defense.classifier(x + (purified - x).detach())
