"""A tiny learnable dataset for training tests: random 3xSxS images whose class (2) is their brightness."""

from __future__ import annotations

import torch

from atop.data import PreparedData


def brightness_data(n_train: int, n_val: int, n_test: int, seed: int = 0, size: int = 16) -> PreparedData:
    g = torch.Generator().manual_seed(seed)
    tensors = {}
    for split, n in [("train", n_train), ("val", n_val), ("test", n_test)]:
        y = torch.randint(0, 2, (n,), generator=g)
        x = (0.3 + 0.4 * y.float()).view(n, 1, 1, 1) + 0.1 * torch.randn(n, 3, size, size, generator=g)
        tensors[f"x_{split}"] = (x.clamp(0, 1) * 255).round().to(torch.uint8)
        tensors[f"y_{split}"] = y
    info = {
        "dataset": "synthetic",
        "num_classes": 2,
        "image_shape": [3, size, size],
        "mean": [0.5] * 3,
        "std": [0.25] * 3,
    }
    return PreparedData(tensors=tensors, info=info)
