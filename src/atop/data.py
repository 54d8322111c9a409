"""Dataset registry and the prepared-dataset file every later stage reads.

A prepared dataset is one ``.pt`` file of uint8 images (N, C, H, W) and int64
labels for the train / val / test splits. Stages turn images into floats in
[0, 1]; models normalise inside themselves with the statistics stored here.

Downloaded datasets come from their upstream archive, kept in ``raw_dir``
(config ``data.raw_dir``) and reused by later runs. The archive is verified
against its published checksums before anything reads it, and images are read
straight out of it: no extracted tree exists that a failed run could leave
half-written.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import pickle
import sys
import tarfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .errors import DataError
from .io import atomic_path, sha256_file, sha256_tensor
from .registry import Registry

log = logging.getLogger("atop.data")

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class RawDataset:
    images: torch.Tensor  # uint8 (N, C, H, W)
    labels: torch.Tensor  # int64 (N,)
    num_classes: int
    source: str
    # True for images of the upstream test split, which the test split is drawn from.
    upstream_test: torch.Tensor | None = None


@dataclass(frozen=True)
class Archive:
    """One upstream file and the checksums it is published with."""

    url: str
    filename: str
    md5: str | None = None
    sha256: str | None = None

    def __post_init__(self) -> None:
        if not (self.md5 or self.sha256):
            raise ValueError(f"archive {self.filename} needs a published md5 or sha256")

    def describe_checksums(self) -> str:
        return ", ".join(f"{name} {value}" for name, value in (("sha256", self.sha256), ("md5", self.md5)) if value)


# Checksums: md5 from torchvision's CIFAR10 / CIFAR100 / Imagenette classes (0.29),
# sha256 of the CIFAR archives as published with keras.datasets.
ARCHIVES = {
    "cifar10": Archive(
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        filename="cifar-10-python.tar.gz",
        md5="c58f30108f718f92721af3b95e74349a",
        sha256="6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
    ),
    "cifar100": Archive(
        url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        filename="cifar-100-python.tar.gz",
        md5="eb9058c3a382ffc7106e4002c42a8d85",
        sha256="85cd44d02ba6437773c5bbd22e183051d648de2e7d6b014e1ef29b855ba677a7",
    ),
    "imagenette": Archive(
        url="https://s3.amazonaws.com/fast-ai-imageclas/imagenette2-320.tgz",
        filename="imagenette2-320.tgz",
        md5="3df6f0d01a2c9592104656642f5e78a3",
    ),
}


def verify_archive(path: Path, archive: Archive) -> None:
    """Raise :class:`DataError` unless ``path`` has the archive's published checksums."""
    digests = {"md5": hashlib.md5(), "sha256": hashlib.sha256()}
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            for digest in digests.values():
                digest.update(block)
    for name, digest in digests.items():
        expected = getattr(archive, name)
        if expected and digest.hexdigest() != expected:
            raise DataError(
                f"checksum error: {path} has {name} {digest.hexdigest()}, expected {expected} "
                f"({archive.filename} from {archive.url}). The file is corrupt or truncated: delete it "
                f"and run again to download it, or put a good copy there."
            )


def download(archive: Archive, target: Path) -> None:
    """Fetch ``archive`` to ``target``: written to a temporary sibling, verified, then renamed."""
    log.info("downloading %s to %s", archive.url, target)
    try:
        with atomic_path(target) as tmp:
            with urllib.request.urlopen(archive.url, timeout=60) as response, open(tmp, "wb") as out:
                total = int(response.headers.get("Content-Length") or 0)
                done, shown = 0, time.monotonic()
                for block in iter(lambda: response.read(1 << 20), b""):
                    out.write(block)
                    done += len(block)
                    if time.monotonic() - shown > 2 or done == total:
                        shown = time.monotonic()
                        of = f" of {total / 2**20:.1f}" if total else ""
                        print(f"\r{archive.filename}: {done / 2**20:.1f}{of} MiB", end="", file=sys.stderr, flush=True)
            print(file=sys.stderr)
            verify_archive(tmp, archive)
    except (urllib.error.URLError, OSError) as error:
        raise DataError(
            f"cannot download {archive.url} ({error}). Without network, fetch that URL elsewhere and put "
            f"the file at {target} (file name {archive.filename}, {archive.describe_checksums()}); "
            f"it is verified and used without network."
        ) from error


def fetch_archive(archive: Archive, raw_dir: str | Path, allow_download: bool = True) -> Path:
    """The verified archive in ``raw_dir``, downloaded first if it is not there."""
    path = Path(raw_dir) / archive.filename
    if not path.is_file():
        if not allow_download:
            raise DataError(
                f"{path} does not exist and data.download is off: fetch {archive.url} and put it at {path} "
                f"({archive.describe_checksums()})."
            )
        download(archive, path)
    verify_archive(path, archive)
    return path


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """CIFAR batches are pickled dicts of numpy arrays; refuse any other global."""

    ALLOWED = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 store bytes
        }
    )

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise DataError(f"CIFAR batch refers to {module}.{name}, which a CIFAR pickle never does")
        return super().find_class(module, name)


def _read_pickle(tar: tarfile.TarFile, name: str) -> dict:
    try:
        handle = tar.extractfile(name)
    except KeyError:
        raise DataError(f"{tar.name} has no member {name}: not the upstream archive layout") from None
    return _NumpyOnlyUnpickler(io.BytesIO(handle.read()), encoding="latin1").load()


def _cifar_images(batch: dict) -> torch.Tensor:
    data = np.asarray(batch["data"], dtype=np.uint8)
    return torch.from_numpy(data.reshape(-1, 3, 32, 32).copy())


@dataclass(frozen=True)
class CifarLayout:
    folder: str
    train_members: tuple[str, ...]
    test_members: tuple[str, ...]
    meta_member: str
    label_key: str
    names_key: str


CIFAR_LAYOUTS = {
    "cifar10": CifarLayout(
        "cifar-10-batches-py",
        tuple(f"data_batch_{i}" for i in range(1, 6)),
        ("test_batch",),
        "batches.meta",
        "labels",
        "label_names",
    ),
    "cifar100": CifarLayout("cifar-100-python", ("train",), ("test",), "meta", "fine_labels", "fine_label_names"),
}


def load_cifar(name: str, image_size: int, raw_dir: str | Path, download: bool = True) -> RawDataset:
    if image_size != 32:
        raise ValueError(
            f"{name} images are 32x32; set data.image_size: 32 (purifier.image_size resizes for the purifier)"
        )
    layout, archive = CIFAR_LAYOUTS[name], ARCHIVES[name]
    path = fetch_archive(archive, raw_dir, download)
    parts: dict[str, list[dict]] = {}
    with tarfile.open(path, "r:gz") as tar:
        meta = _read_pickle(tar, f"{layout.folder}/{layout.meta_member}")
        for split, members in (("train", layout.train_members), ("test", layout.test_members)):
            parts[split] = [_read_pickle(tar, f"{layout.folder}/{member}") for member in members]
    images = {split: torch.cat([_cifar_images(b) for b in batches]) for split, batches in parts.items()}
    labels = {
        split: torch.cat([torch.as_tensor(b[layout.label_key], dtype=torch.int64) for b in batches])
        for split, batches in parts.items()
    }
    num_classes = len(meta[layout.names_key])
    return RawDataset(
        images=torch.cat([images["train"], images["test"]]),
        labels=torch.cat([labels["train"], labels["test"]]),
        num_classes=num_classes,
        source=f"{archive.url} ({archive.describe_checksums()})",
        upstream_test=torch.cat(
            [torch.zeros(len(labels["train"]), dtype=torch.bool), torch.ones(len(labels["test"]), dtype=torch.bool)]
        ),
    )


DATASETS: Registry = Registry("dataset")


@DATASETS.register("cifar10")
def load_cifar10(image_size: int, raw_dir: str = "data/raw", download: bool = True, **_: object) -> RawDataset:
    """CIFAR-10 from the upstream python-pickle archive; the upstream test batch is the test pool."""
    return load_cifar("cifar10", image_size, raw_dir, download)


@DATASETS.register("cifar100")
def load_cifar100(image_size: int, raw_dir: str = "data/raw", download: bool = True, **_: object) -> RawDataset:
    """CIFAR-100 (fine labels) from the upstream python-pickle archive."""
    return load_cifar("cifar100", image_size, raw_dir, download)


def _square_image(data: bytes, size: int) -> torch.Tensor:
    """Decode a JPEG, resize its shorter side to ``size`` and centre-crop: uint8 (3, size, size)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        image = image.convert("RGB")
        scale = size / min(image.size)
        width, height = max(size, round(image.width * scale)), max(size, round(image.height * scale))
        image = image.resize((width, height), Image.Resampling.BILINEAR)
        left, top = (width - size) // 2, (height - size) // 2
        image = image.crop((left, top, left + size, top + size))
        return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)


@DATASETS.register("imagenette")
def load_imagenette(image_size: int, raw_dir: str = "data/raw", download: bool = True, **_: object) -> RawDataset:
    """ImageNette (fast.ai, 320 px version): train/<wnid>/*.JPEG, val/<wnid>/*.JPEG; val is the test pool.

    Classes are the sorted WordNet ids; images are resized (shorter side) to
    ``image_size`` and centre-cropped.
    """
    archive = ARCHIVES["imagenette"]
    path = fetch_archive(archive, raw_dir, download)
    found: list[tuple[str, str, torch.Tensor]] = []
    with tarfile.open(path, "r:gz") as tar:
        for member in tar:
            parts = member.name.split("/")
            if not member.isfile() or len(parts) != 4 or not parts[3].upper().endswith(".JPEG"):
                continue
            _, split, wnid, _ = parts
            if split not in ("train", "val"):
                continue
            found.append((split, wnid, _square_image(tar.extractfile(member).read(), image_size)))
    if not found:
        raise DataError(f"{path} holds no train/<wnid>/*.JPEG images: not the ImageNette archive layout")
    classes = sorted({wnid for _, wnid, _ in found})
    index = {wnid: i for i, wnid in enumerate(classes)}
    return RawDataset(
        images=torch.stack([image for _, _, image in found]),
        labels=torch.tensor([index[wnid] for _, wnid, _ in found], dtype=torch.int64),
        num_classes=len(classes),
        source=f"{archive.url} ({archive.describe_checksums()}), {image_size}px centre crops",
        upstream_test=torch.tensor([split == "val" for split, _, _ in found]),
    )


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


def split_indices(
    n: int, val_size: int, test_size: int, seed: int, upstream_test: torch.Tensor | None = None
) -> dict[str, torch.Tensor]:
    """Seeded train / val / test indices; with ``upstream_test`` the test split comes from the upstream one."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    if upstream_test is None:
        if val_size + test_size >= n:
            raise ValueError(f"val_size + test_size = {val_size + test_size} leaves no training images of {n}")
        test, val, train = order[:test_size], order[test_size : test_size + val_size], order[test_size + val_size :]
    else:
        test_pool, train_pool = order[upstream_test[order]], order[~upstream_test[order]]
        if test_size > len(test_pool):
            raise ValueError(f"data.test_size = {test_size} exceeds the {len(test_pool)} upstream test images")
        if val_size >= len(train_pool):
            raise ValueError(
                f"data.val_size = {val_size} leaves none of the {len(train_pool)} upstream training images"
            )
        test, val, train = test_pool[:test_size], train_pool[:val_size], train_pool[val_size:]
    return {"test": test.sort().values, "val": val.sort().values, "train": train.sort().values}


def prepare_dataset(spec: dict, out_path: str | Path) -> dict:
    """Build the split dataset file; return its manifest (sizes, seed, checksums, statistics)."""
    raw = DATASETS[spec["dataset"]](**spec)
    if spec.get("limit"):
        keep = torch.randperm(len(raw.labels), generator=torch.Generator().manual_seed(spec["split_seed"]))
        keep = keep[: spec["limit"]].sort().values
        raw = RawDataset(
            raw.images[keep],
            raw.labels[keep],
            raw.num_classes,
            f"{raw.source}, {len(keep)} images kept",
            None if raw.upstream_test is None else raw.upstream_test[keep],
        )
    splits = split_indices(len(raw.labels), spec["val_size"], spec["test_size"], spec["split_seed"], raw.upstream_test)
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
        "sizes": {split: len(idx) for split, idx in splits.items()},
        "test_drawn_from": "random split" if raw.upstream_test is None else "upstream test split",
        "class_counts": {
            split: torch.bincount(tensors[f"y_{split}"], minlength=raw.num_classes).tolist() for split in SPLITS
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
    """The prepared dataset at ``path``, checked against the ``manifest.json`` written beside it.

    A damaged file (truncated, altered, or left by a job that did not finish) is a
    :class:`DataError` naming the file, never a silently different dataset.
    """
    path = Path(path)
    redo = "delete it and rerun prepare_data (snakemake reruns it once the file is gone)"
    manifest_path = path.with_name("manifest.json")
    if manifest_path.is_file():
        try:
            expected = json.loads(manifest_path.read_text()).get("file_sha256")
        except json.JSONDecodeError as error:
            raise DataError(f"{manifest_path} is not valid JSON ({error}): {redo}") from error
        if expected and sha256_file(path) != expected:
            raise DataError(
                f"{path} does not match the sha256 in {manifest_path}: it is damaged or was replaced; {redo}"
            )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as error:  # torch raises several types for damaged files
        raise DataError(
            f"{path} cannot be read as a prepared dataset ({type(error).__name__}: {error}); {redo}"
        ) from error
    missing = [f"{p}_{s}" for s in SPLITS for p in ("x", "y") if f"{p}_{s}" not in payload]
    if missing or "info" not in payload:
        raise ValueError(f"{path} is not a prepared dataset (missing {missing or ['info']})")
    info = payload.pop("info")
    return PreparedData(tensors=payload, info=info)
