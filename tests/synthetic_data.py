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


# The training tests' tiny purifier and its fine-tuning recipe.
PURIFIER_SPEC = {
    "arch": "gan_unet",
    "arch_params": {"base_channels": 4},
    "transform": "rt2",
    "transform_params": {"noise_std": 0.25, "grid": 4, "mask_rate": 0.25},
    "pretrain": {"epochs": 1, "batch_size": 16, "lr": 1e-3, "betas": [0.5, 0.999], "adv_weight": 0.1, "l1_weight": 1.0},
}


def finetune_spec(**overrides) -> dict:
    """A one-epoch fine-tuning spec of the tiny purifier; ``overrides`` replace finetune keys."""
    ft = {
        "attack": "fgsm_classifier",
        "eps": 8 / 255,
        "alpha": 2 / 255,
        "steps": 1,
        "epochs": 1,
        "batch_size": 16,
        "lr": 1e-3,
        "betas": [0.5, 0.999],
        "adv_weight": 0.1,
        "l1_weight": 1.0,
        "ce_weight": 0.5,
        "ce_start_epoch": 0,
        "max_clean_drop": 1.0,
        "check_draws": 1,
    }
    return {"purifier": PURIFIER_SPEC, "finetune": {**ft, **overrides}}
