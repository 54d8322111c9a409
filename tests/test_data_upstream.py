"""CIFAR-10 / CIFAR-100 / ImageNette loaders, run on small archives built in the exact upstream formats."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import operator
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

import atop.data as data_module
from atop.data import DataError, fetch_archive, load_prepared, prepare_dataset

PER_BATCH = 6  # images per CIFAR batch file


def _add(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    tar.addfile(info, io.BytesIO(payload))


def _batch(rng, label_key: str, num_classes: int, extra: dict | None = None) -> dict:
    # Upstream: a latin1-pickled dict, 'data' a (N, 3072) uint8 array in channel-major order.
    return {
        "batch_label": "testing batch",
        "data": rng.integers(0, 256, size=(PER_BATCH, 3072), dtype=np.uint8),
        label_key: rng.integers(0, num_classes, size=PER_BATCH).tolist(),
        "filenames": [f"img_{i}.png" for i in range(PER_BATCH)],
        **(extra or {}),
    }


def build_cifar10(path: Path, seed: int = 0) -> dict[str, dict]:
    rng = np.random.default_rng(seed)
    batches = {f"data_batch_{i}": _batch(rng, "labels", 10) for i in range(1, 6)} | {
        "test_batch": _batch(rng, "labels", 10)
    }
    with tarfile.open(path, "w:gz") as tar:
        for name, batch in batches.items():
            _add(tar, f"cifar-10-batches-py/{name}", pickle.dumps(batch, protocol=2))
        meta = {"label_names": [f"class{i}" for i in range(10)], "num_cases_per_batch": PER_BATCH}
        _add(tar, "cifar-10-batches-py/batches.meta", pickle.dumps(meta, protocol=2))
    return batches


def build_cifar100(path: Path, seed: int = 0) -> dict[str, dict]:
    rng = np.random.default_rng(seed)
    batches = {}
    for name in ("train", "test"):
        # Coarse labels differ from the fine ones, so reading the wrong key would show.
        batches[name] = _batch(rng, "fine_labels", 100, {"coarse_labels": [99] * PER_BATCH})
    with tarfile.open(path, "w:gz") as tar:
        for name, batch in batches.items():
            _add(tar, f"cifar-100-python/{name}", pickle.dumps(batch, protocol=2))
        meta = {"fine_label_names": [f"f{i}" for i in range(100)], "coarse_label_names": [f"c{i}" for i in range(20)]}
        _add(tar, "cifar-100-python/meta", pickle.dumps(meta, protocol=2))
    return batches


WNIDS = ("n03888257", "n01440764")  # deliberately unsorted: classes are the sorted ids


def build_imagenette(path: Path) -> list[tuple[str, str]]:
    from PIL import Image

    written = []
    with tarfile.open(path, "w:gz") as tar:
        for split, per_class in (("train", 3), ("val", 2)):
            for c, wnid in enumerate(WNIDS):
                for i in range(per_class):
                    # 320 px shorter side upstream; tiny here, landscape and portrait.
                    size = (30, 20) if i % 2 else (20, 26)
                    image = Image.new("RGB", size, color=(40 + 100 * c, 80, 200 - 100 * c))
                    buffer = io.BytesIO()
                    image.save(buffer, format="JPEG")
                    _add(tar, f"imagenette2-320/{split}/{wnid}/{wnid}_{i}.JPEG", buffer.getvalue())
                    written.append((split, wnid))
        _add(tar, "imagenette2-320/noisy_imagenette.csv", b"path,noisy_labels_0\n")
    return written


def _checksums(path: Path) -> dict:
    payload = path.read_bytes()
    return {"md5": hashlib.md5(payload).hexdigest(), "sha256": hashlib.sha256(payload).hexdigest()}


@pytest.fixture
def archives(tmp_path, monkeypatch):
    """Build the three archives in a 'server' folder; point the registry's URLs and checksums at them."""
    server = tmp_path / "server"
    server.mkdir()
    built = {}
    for name, builder in (("cifar10", build_cifar10), ("cifar100", build_cifar100), ("imagenette", build_imagenette)):
        archive = data_module.ARCHIVES[name]
        source = server / archive.filename
        built[name] = builder(source)
        local = dataclasses.replace(archive, url=source.as_uri(), **_checksums(source))
        monkeypatch.setitem(data_module.ARCHIVES, name, local)
    return server, built


def _spec(dataset, raw_dir, **overrides):
    return {
        "dataset": dataset,
        "image_size": 32,
        "val_size": 4,
        "test_size": 5,
        "split_seed": 0,
        "limit": None,
        "raw_dir": str(raw_dir),
        "download": True,
        **overrides,
    }


def test_cifar10_reads_every_batch_in_upstream_layout(archives, tmp_path):
    _, built = archives
    raw = data_module.DATASETS["cifar10"](image_size=32, raw_dir=tmp_path / "raw")
    assert raw.images.shape == (6 * PER_BATCH, 3, 32, 32) and raw.images.dtype == torch.uint8
    assert raw.num_classes == 10
    order = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    expected_labels = functools.reduce(operator.iadd, (built["cifar10"][name]["labels"] for name in order), [])
    assert raw.labels.tolist() == expected_labels
    # Rows are channel-major: the first 1024 bytes are the red plane.
    first = built["cifar10"]["data_batch_1"]["data"][0]
    assert torch.equal(raw.images[0, 0], torch.from_numpy(first[:1024].reshape(32, 32)))
    assert torch.equal(raw.images[0, 2], torch.from_numpy(first[2048:].reshape(32, 32)))
    assert raw.upstream_test.tolist() == [False] * 5 * PER_BATCH + [True] * PER_BATCH


def test_cifar100_uses_fine_labels(archives, tmp_path):
    _, built = archives
    raw = data_module.DATASETS["cifar100"](image_size=32, raw_dir=tmp_path / "raw")
    assert raw.num_classes == 100
    assert raw.labels.tolist() == built["cifar100"]["train"]["fine_labels"] + built["cifar100"]["test"]["fine_labels"]
    assert 99 not in raw.labels.tolist() or raw.labels.tolist().count(99) < 2 * PER_BATCH


def test_imagenette_reads_the_folder_tree(archives, tmp_path):
    _, written = archives
    raw = data_module.DATASETS["imagenette"](image_size=16, raw_dir=tmp_path / "raw")
    assert raw.images.shape == (len(written["imagenette"]), 3, 16, 16)
    assert raw.num_classes == 2
    sorted_ids = sorted(WNIDS)
    assert raw.labels.tolist() == [sorted_ids.index(wnid) for _, wnid in written["imagenette"]]
    assert raw.upstream_test.tolist() == [split == "val" for split, _ in written["imagenette"]]
    # Solid-colour JPEGs keep their colour through decoding, resize and crop.
    for c, wnid in enumerate(WNIDS):
        mean = raw.images[raw.labels == sorted_ids.index(wnid)].float().mean(dim=(0, 2, 3))
        torch.testing.assert_close(mean, torch.tensor([40.0 + 100 * c, 80.0, 200.0 - 100 * c]), atol=4, rtol=0)


def test_download_once_then_offline(archives, tmp_path):
    server, _ = archives
    raw_dir = tmp_path / "raw"
    archive = data_module.ARCHIVES["cifar10"]
    path = fetch_archive(archive, raw_dir)
    assert path == raw_dir / "cifar-10-python.tar.gz" and path.read_bytes() == (server / archive.filename).read_bytes()
    (server / archive.filename).unlink()  # the "network" is gone; the kept archive is verified and used
    assert fetch_archive(archive, raw_dir, allow_download=False) == path
    assert len(data_module.DATASETS["cifar10"](image_size=32, raw_dir=raw_dir, download=False).labels) == 36


def test_failed_download_names_url_file_checksum_and_place(archives, tmp_path):
    archive = dataclasses.replace(data_module.ARCHIVES["cifar100"], url=(tmp_path / "nowhere.tar.gz").as_uri())
    raw_dir = tmp_path / "raw"
    with pytest.raises(DataError) as info:
        fetch_archive(archive, raw_dir)
    message = str(info.value)
    for part in (archive.url, "cifar-100-python.tar.gz", archive.sha256, str(raw_dir / archive.filename)):
        assert part in message
    assert not any(raw_dir.iterdir())


def test_missing_archive_without_download_names_where_to_put_it(archives, tmp_path):
    with pytest.raises(DataError, match=r"raw/imagenette2-320\.tgz.*data\.download"):
        fetch_archive(data_module.ARCHIVES["imagenette"], tmp_path / "raw", allow_download=False)


@pytest.mark.parametrize("damage", ["truncate", "flip_byte"])
def test_corrupt_archive_is_a_checksum_error_and_nothing_is_written(archives, tmp_path, damage):
    server, _ = archives
    raw_dir = tmp_path / "raw"
    raw_dir.mkdir()
    good = (server / "cifar-10-python.tar.gz").read_bytes()
    bad = good[: len(good) // 2] if damage == "truncate" else good[:100] + bytes([good[100] ^ 1]) + good[101:]
    (raw_dir / "cifar-10-python.tar.gz").write_bytes(bad)
    out = tmp_path / "prepared" / "cifar10.pt"
    with pytest.raises(DataError, match="checksum error.*cifar-10-python.tar.gz"):
        prepare_dataset(_spec("cifar10", raw_dir), out)
    assert not out.exists() and not out.parent.exists()
    assert sorted(p.name for p in raw_dir.iterdir()) == ["cifar-10-python.tar.gz"]  # no extracted tree


def test_corrupt_download_is_not_kept(archives, tmp_path):
    server, _ = archives
    archive = data_module.ARCHIVES["cifar10"]
    (server / archive.filename).write_bytes(b"not the archive")
    raw_dir = tmp_path / "raw"
    with pytest.raises(DataError, match="checksum error"):
        fetch_archive(archive, raw_dir)
    assert not (raw_dir / archive.filename).exists()
    assert list(raw_dir.iterdir()) == []


def test_prepare_cifar10_draws_test_from_the_upstream_test_batch(archives, tmp_path):
    out = tmp_path / "cifar10.pt"
    manifest = prepare_dataset(_spec("cifar10", tmp_path / "raw"), out)
    assert manifest["sizes"] == {"test": 5, "val": 4, "train": 5 * PER_BATCH - 4}
    assert manifest["test_drawn_from"] == "upstream test split"
    assert all(i >= 5 * PER_BATCH for i in manifest["original_indices"]["test"])
    assert all(i < 5 * PER_BATCH for i in manifest["original_indices"]["val"] + manifest["original_indices"]["train"])
    prepared = load_prepared(out)
    assert prepared.info["image_shape"] == [3, 32, 32] and prepared.num_classes == 10


def test_prepare_rejects_more_test_images_than_upstream_has(archives, tmp_path):
    with pytest.raises(ValueError, match="test_size = 7 exceeds the 6 upstream test images"):
        prepare_dataset(_spec("cifar10", tmp_path / "raw", test_size=7), tmp_path / "c.pt")


def test_cifar_rejects_other_image_sizes(archives, tmp_path):
    with pytest.raises(ValueError, match="data.image_size: 32"):
        data_module.DATASETS["cifar10"](image_size=64, raw_dir=tmp_path / "raw")


def test_cifar_pickles_may_only_hold_numpy_data(tmp_path, monkeypatch):
    path = tmp_path / "evil.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        _add(tar, "cifar-10-batches-py/batches.meta", pickle.dumps({"label_names": Path("x")}, protocol=2))
    archive = dataclasses.replace(data_module.ARCHIVES["cifar10"], url=path.as_uri(), **_checksums(path))
    monkeypatch.setitem(data_module.ARCHIVES, "cifar10", archive)
    with pytest.raises(DataError, match="pathlib"):
        data_module.DATASETS["cifar10"](image_size=32, raw_dir=tmp_path / "raw")
