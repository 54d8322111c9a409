"""Accuracy of possibly randomized models, and its uncertainty."""

from __future__ import annotations

import torch
from torch import nn

from .stats import wilson_interval


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


def summarize(correct: torch.Tensor) -> dict:
    """Mean accuracy over draws, strict all-draws accuracy, and a Wilson interval on the mean."""
    n = correct.shape[1]
    mean = correct.float().mean().item()
    strict = correct.all(dim=0).float().mean().item()
    low, high = wilson_interval(mean * n, n)
    return {"accuracy": mean, "strict_accuracy": strict, "ci95": [low, high], "n": n, "draws": correct.shape[0]}
