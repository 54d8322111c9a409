"""Atomic writes and safe checkpoints."""

from __future__ import annotations

import builtins
import pickle

import pytest
import torch

from atop.defense import load_classifier, load_purifier
from atop.io import (
    CheckpointError,
    atomic_path,
    load_checkpoint,
    read_json,
    save_checkpoint,
    sha256_file,
    sha256_tensor,
    write_json,
)
from atop.models import build_classifier, build_purifier


def _classifier_meta(width=4):
    return {
        "arch": "small_cnn",
        "num_classes": 2,
        "mean": [0.5, 0.5, 0.5],
        "std": [0.25, 0.25, 0.25],
        "image_size": 16,
        "width": width,
    }


class _MarkerPayload:
    """Unpickling this creates ``path``: stands in for arbitrary code execution."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (builtins.open, (self.path, "w"))


def test_checkpoint_round_trip(tmp_path):
    state = {"weight": torch.randn(3, 4), "bias": torch.arange(4), "flag": torch.tensor(True)}
    meta = {"kind": "classifier", "stage": "trained", "seed": 3, "eps": 8 / 255, "nested": {"list": [1, 2.5, "x"]}}
    path = tmp_path / "sub" / "model.pt"
    save_checkpoint(path, state, meta)
    loaded_state, loaded_meta = load_checkpoint(path, expect_kind="classifier")
    assert loaded_state.keys() == state.keys()
    for key, value in state.items():
        assert torch.equal(loaded_state[key], value) and loaded_state[key].dtype == value.dtype
    assert loaded_meta == meta
    assert [p.name for p in path.parent.iterdir()] == ["model.pt"]  # no temporary left behind


def test_load_checkpoint_uses_weights_only(tmp_path, monkeypatch):
    path = tmp_path / "model.pt"
    save_checkpoint(path, {"w": torch.ones(1)}, {"kind": "classifier"})
    seen = {}
    real_load = torch.load

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    load_checkpoint(path)
    assert seen.get("weights_only") is True


def test_missing_checkpoint_raises_with_path(tmp_path):
    path = tmp_path / "nope.pt"
    with pytest.raises(CheckpointError, match="nope.pt"):
        load_checkpoint(path)


def test_truncated_checkpoint_raises_checkpoint_error_naming_the_path(tmp_path):
    path = tmp_path / "model.pt"
    save_checkpoint(path, {"w": torch.randn(64, 64)}, {"kind": "classifier"})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("writer", ["torch", "pickle"])
def test_malicious_pickle_is_refused_and_not_executed(tmp_path, writer):
    marker = tmp_path / "pwned"
    payload = {"state_dict": {"w": torch.ones(1)}, "meta": {"kind": "classifier", "x": _MarkerPayload(marker)}}
    path = tmp_path / "evil.pt"
    if writer == "torch":
        torch.save(payload, path)
    else:
        with open(path, "wb") as handle:
            pickle.dump(payload, handle)

    with pytest.raises(CheckpointError, match="evil.pt"):
        load_checkpoint(path)
    assert not marker.exists(), "loading a checkpoint executed code from it"

    # Control: the payload is live, an unsafe load would have run it.
    if writer == "torch":
        opened = torch.load(path, weights_only=False)["meta"]["x"]
    else:
        with open(path, "rb") as handle:
            opened = pickle.load(handle)["meta"]["x"]
    opened.close()
    assert marker.exists()


def test_not_an_atop_checkpoint(tmp_path):
    path = tmp_path / "plain.pt"
    torch.save({"weights": torch.ones(2)}, path)
    with pytest.raises(CheckpointError, match="not an atop checkpoint"):
        load_checkpoint(path)


def test_wrong_kind_raises(tmp_path):
    path = tmp_path / "purifier.pt"
    save_checkpoint(path, {"w": torch.ones(1)}, {"kind": "purifier"})
    assert load_checkpoint(path, expect_kind="purifier")[1]["kind"] == "purifier"
    with pytest.raises(CheckpointError, match="'purifier'.*expected 'classifier'"):
        load_checkpoint(path, expect_kind="classifier")
    with pytest.raises(CheckpointError):
        load_classifier(path)


def test_non_dict_meta_is_a_checkpoint_error(tmp_path):
    path = tmp_path / "odd.pt"
    torch.save({"state_dict": {}, "meta": [1, 2]}, path)
    with pytest.raises(CheckpointError):
        load_checkpoint(path, expect_kind="classifier")


def test_atomic_path_success_replaces_target_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with atomic_path(target) as tmp:
        assert tmp != target and tmp.parent == target.parent
        tmp.write_text("new")
        assert target.read_text() == "old"  # not visible before the body finishes
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_atomic_path_failure_keeps_target_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="boom"), atomic_path(target) as tmp:
        tmp.write_text("half-written")
        raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_atomic_path_failure_without_existing_target_creates_nothing(tmp_path):
    target = tmp_path / "new" / "out.json"
    with pytest.raises(ValueError), atomic_path(target) as tmp:
        tmp.write_text("{")
        raise ValueError
    assert not target.exists()
    assert list(target.parent.iterdir()) == []


def test_write_json_round_trip_and_hashes(tmp_path):
    path = tmp_path / "a.json"
    write_json(path, {"b": 1, "a": [0.5, "x"]})
    assert read_json(path) == {"a": [0.5, "x"], "b": 1}
    assert sha256_file(path) == sha256_file(path) and len(sha256_file(path)) == 64
    t = torch.arange(6, dtype=torch.float32)
    assert sha256_tensor(t) == sha256_tensor(t.clone())
    assert sha256_tensor(t) != sha256_tensor(t + 1)


def test_load_classifier_round_trip(tmp_path):
    torch.manual_seed(0)
    model = build_classifier(**_classifier_meta()).eval()
    path = tmp_path / "classifier.pt"
    save_checkpoint(path, model.state_dict(), {"kind": "classifier", "model": _classifier_meta()})
    loaded, meta = load_classifier(path)
    assert meta["model"] == _classifier_meta()
    assert not loaded.training
    assert all(not p.requires_grad for p in loaded.parameters())
    x = torch.rand(2, 3, 16, 16)
    assert torch.equal(loaded(x), model(x))


def test_load_classifier_with_weights_that_do_not_fit_raises(tmp_path):
    torch.manual_seed(0)
    state = build_classifier(**_classifier_meta(width=4)).state_dict()
    path = tmp_path / "classifier.pt"
    save_checkpoint(path, state, {"kind": "classifier", "model": _classifier_meta(width=8)})
    with pytest.raises(CheckpointError, match="does not fit") as info:
        load_classifier(path)
    assert str(path) in str(info.value)


def test_load_purifier_round_trip_and_mismatch(tmp_path):
    torch.manual_seed(0)
    parts = build_purifier("gan_unet", base_channels=4)
    meta = {
        "kind": "purifier",
        "stage": "pretrained",
        "model": {"arch": "gan_unet", "base_channels": 4, "in_channels": 3},
        "transform": {"name": "rt2", "params": {"noise_std": 0.2, "grid": 4, "mask_rate": 0.25}},
    }
    path = tmp_path / "purifier.pt"
    save_checkpoint(path, parts.as_module().state_dict(), meta)
    generator, transform, loaded_meta = load_purifier(path, seed=3)
    assert loaded_meta["stage"] == "pretrained"
    assert (transform.noise_std, transform.grid, transform.mask_rate, transform.seed) == (0.2, 4, 0.25, 3)
    x_t, mask = torch.rand(1, 3, 16, 16), torch.zeros(1, 1, 16, 16)
    assert torch.equal(generator(x_t, mask), parts.generator.eval()(x_t, mask))

    bad = tmp_path / "bad.pt"
    save_checkpoint(bad, parts.as_module().state_dict(), {**meta, "model": {**meta["model"], "base_channels": 8}})
    with pytest.raises(CheckpointError, match="does not fit"):
        load_purifier(bad)


def test_staged_directory_replaces_whole_or_keeps_the_old_one(tmp_path):
    from atop.io import staged_directory

    target = tmp_path / "report"
    with staged_directory(target) as staging:
        (staging / "a.txt").write_text("old")
        (staging / "stale.txt").write_text("old only")
    with pytest.raises(RuntimeError), staged_directory(target) as staging:
        (staging / "a.txt").write_text("new")
        raise RuntimeError("killed half-way")
    assert {p.name: p.read_text() for p in target.iterdir()} == {"a.txt": "old", "stale.txt": "old only"}
    with staged_directory(target) as staging:
        (staging / "a.txt").write_text("new")
    assert {p.name: p.read_text() for p in target.iterdir()} == {"a.txt": "new"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]
