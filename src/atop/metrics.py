"""Accuracy of possibly randomized models, and its uncertainty."""

from __future__ import annotations

import math

import torch
from torch import nn


@torch.no_grad()
def correct_per_draw(model: nn.Module, x: torch.Tensor, y: torch.Tensor, draws: int, batch_size: int) -> torch.Tensor:
    """Boolean (draws, N): whether each of ``draws`` forward passes classifies each sample right."""
    device = next(model.parameters()).device
    rows = []
    for _ in range(draws):
        row = []
        for start in range(0, len(y), batch_size):
            xb = x[start : start + batch_size].to(device)
            row.append(model(xb).argmax(dim=1).cpu() == y[start : start + batch_size])
        rows.append(torch.cat(row))
    return torch.stack(rows)


def wilson_interval(successes: float, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95 % Wilson score interval for a binomial proportion."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    low = 0.0 if successes <= 0 else max(0.0, centre - half)
    high = 1.0 if successes >= n else min(1.0, centre + half)
    return (low, high)


def summarize(correct: torch.Tensor) -> dict:
    """Mean accuracy over draws, strict all-draws accuracy, and a Wilson interval on the mean."""
    n = correct.shape[1]
    mean = correct.float().mean().item()
    strict = correct.all(dim=0).float().mean().item()
    low, high = wilson_interval(mean * n, n)
    return {"accuracy": mean, "strict_accuracy": strict, "ci95": [low, high], "n": n, "draws": correct.shape[0]}
