"""Dataset registry and the prepared-dataset file every later stage reads.

A prepared dataset is one ``.pt`` file of uint8 images (N, C, H, W) and int64
labels for the train / val / test splits. Stages turn images into floats in
[0, 1]; models normalise inside themselves with the statistics stored here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .io import atomic_path, sha256_file, sha256_tensor
from .registry import Registry

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class RawDataset:
    images: torch.Tensor  # uint8 (N, C, H, W)
    labels: torch.Tensor  # int64 (N,)
    num_classes: int
    source: str


DATASETS: Registry = Registry("dataset")


@DATASETS.register("digits")
def load_digits_images(image_size: int, **_: object) -> RawDataset:
    """scikit-learn's bundled 8x8 handwritten digits, upsampled to RGB ``image_size``."""
    import sklearn
    from sklearn.datasets import load_digits

    bunch = load_digits()
    small = torch.from_numpy(bunch.images.astype(np.float32) / 16.0).unsqueeze(1)
    big = F.interpolate(small, size=(image_size, image_size), mode="bilinear", align_corners=False)
    images = (big.clamp(0, 1) * 255).round().to(torch.uint8).repeat(1, 3, 1, 1)
    return RawDataset(
        images=images,
        labels=torch.from_numpy(bunch.target.astype(np.int64)),
        num_classes=10,
        source=f"sklearn.datasets.load_digits (scikit-learn {sklearn.__version__})",
    )


def split_indices(n: int, val_size: int, test_size: int, seed: int) -> dict[str, torch.Tensor]:
    if val_size + test_size >= n:
        raise ValueError(f"val_size + test_size = {val_size + test_size} leaves no training images of {n}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return {
        "test": order[:test_size].sort().values,
        "val": order[test_size : test_size + val_size].sort().values,
        "train": order[test_size + val_size :].sort().values,
    }


def prepare_dataset(spec: dict, out_path: str | Path) -> dict:
    """Build the split dataset file; return its manifest (sizes, seed, checksums, statistics)."""
    raw = DATASETS[spec["dataset"]](**spec)
    if spec.get("limit"):
        keep = torch.randperm(len(raw.labels), generator=torch.Generator().manual_seed(spec["split_seed"]))
        keep = keep[: spec["limit"]].sort().values
        raw = RawDataset(raw.images[keep], raw.labels[keep], raw.num_classes, f"{raw.source}, {len(keep)} images kept")
    splits = split_indices(len(raw.labels), spec["val_size"], spec["test_size"], spec["split_seed"])
    tensors: dict[str, torch.Tensor] = {}
    for split, idx in splits.items():
        tensors[f"x_{split}"] = raw.images[idx].contiguous()
        tensors[f"y_{split}"] = raw.labels[idx].contiguous()
    train = tensors["x_train"].float() / 255
    mean = train.mean(dim=(0, 2, 3)).tolist()
    std = train.std(dim=(0, 2, 3)).clamp_min(1e-3).tolist()
    info = {
        "dataset": spec["dataset"],
        "source": raw.source,
        "num_classes": raw.num_classes,
        "image_shape": list(raw.images.shape[1:]),
        "mean": mean,
        "std": std,
        "split_seed": spec["split_seed"],
    }
    with atomic_path(out_path) as tmp:
        torch.save({**tensors, "info": info}, tmp)
    return {
        **info,
        "file": str(out_path),
        "file_sha256": sha256_file(out_path),
        "sizes": {split: int(len(idx)) for split, idx in splits.items()},
        "class_counts": {
            split: torch.bincount(tensors[f"y_{split}"], minlength=raw.num_classes).tolist()
            for split in SPLITS
        },
        "sha256": {name: sha256_tensor(t) for name, t in tensors.items()},
        "original_indices": {split: idx.tolist() for split, idx in splits.items()},
    }


@dataclass
class PreparedData:
    tensors: dict[str, torch.Tensor]
    info: dict

    def images(self, split: str) -> torch.Tensor:
        """Float images in [0, 1]."""
        return self.tensors[f"x_{split}"].float().div_(255)

    def labels(self, split: str) -> torch.Tensor:
        return self.tensors[f"y_{split}"]

    @property
    def num_classes(self) -> int:
        return int(self.info["num_classes"])


def load_prepared(path: str | Path) -> PreparedData:
    payload = torch.load(path, map_location="cpu", weights_only=True)
    missing = [f"{p}_{s}" for s in SPLITS for p in ("x", "y") if f"{p}_{s}" not in payload]
    if missing or "info" not in payload:
        raise ValueError(f"{path} is not a prepared dataset (missing {missing or ['info']})")
    info = payload.pop("info")
    return PreparedData(tensors=payload, info=info)
