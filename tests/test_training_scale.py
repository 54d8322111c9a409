"""The classifier recipe (SGD, cosine, crop+flip), PGD adversarial training, DeepFill / AE pre-training."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml

import atop.train.classifier as classifier_stage
from atop.data import PreparedData
from atop.train.adversarial import train_adversarial
from atop.train.classifier import RECIPE_DEFAULTS, crop_flip, train_classifier
from atop.train.loop import fit
from atop.train.purifier import pretrain_purifier

from synthetic_data import brightness_data

CPU = torch.device("cpu")
SIZE = 16
ROOT = Path(__file__).resolve().parents[1]


def _prepared(n_train=32, n_val=8, n_test=8, seed=0) -> PreparedData:
    return brightness_data(n_train, n_val, n_test, seed, SIZE)


SPEC = {
    "arch": "small_cnn",
    "arch_params": {"width": 4},
    "epochs": 2,
    "batch_size": 16,
    "lr": 1e-2,
    "weight_decay": 0.0,
}
SGD_SPEC = {**SPEC, "optimizer": "sgd", "schedule": "cosine", "augment": True, "lr": 0.05, "weight_decay": 5e-4}
PGD = {"eps": "8/255", "alpha": "2/255", "steps": 2}


def _same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _without_seconds(history):
    return [{k: v for k, v in row.items() if k != "seconds"} for row in history]


def test_schema_defaults_of_the_recipe_are_the_code_defaults():
    schema = yaml.safe_load((ROOT / "config" / "schema.yaml").read_text())
    classifier = schema["properties"]["classifier"]["properties"]
    assert {key: classifier[key]["default"] for key in RECIPE_DEFAULTS} == RECIPE_DEFAULTS
    assert RECIPE_DEFAULTS["optimizer"] == "adam" and RECIPE_DEFAULTS["augment"] is False  # digits unchanged
    adversarial = schema["properties"]["adversarial_training"]["properties"]
    assert {k: adversarial[k]["default"] for k in ("eps", "alpha", "steps")} == {
        "eps": "8/255",
        "alpha": "2/255",
        "steps": 10,
    }


def test_crop_flip_shifts_and_mirrors_whole_images():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    out = crop_flip(x, 2, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    for image, original in zip(out, x):
        candidates = [original, original.flip(-1)]
        padded = [torch.nn.functional.pad(c, (2, 2, 2, 2)) for c in candidates]
        windows = [p[:, i : i + 8, j : j + 8] for p in padded for i in range(5) for j in range(5)]
        # Every output is a shifted crop of the image or of its mirror image (up to the order of flip and crop).
        assert any(torch.equal(image, w) or torch.equal(image.flip(-1), w) for w in windows)
    assert torch.equal(crop_flip(x, 0, torch.Generator().manual_seed(1)).abs().sum(), x.abs().sum())


def test_sgd_cosine_recipe_sets_the_learning_rate_per_epoch(tmp_path):
    _, _, history = train_classifier(_prepared(), {**SGD_SPEC, "epochs": 4}, 0, CPU, tmp_path / "r.resume")
    lrs = [row["lr"] for row in history]
    assert lrs == pytest.approx([0.05 * 0.5 * (1 + math.cos(math.pi * e / 4)) for e in range(4)])
    assert all(math.isfinite(row["train_loss"]) for row in history)


def test_unknown_optimizer_names_the_known_ones(tmp_path):
    with pytest.raises(KeyError, match="adam, sgd"):
        train_classifier(_prepared(), {**SPEC, "optimizer": "lion"}, 0, CPU, tmp_path / "r.resume")


def _interrupt_then_resume(monkeypatch, run, resume: Path, stop_at: int):
    ran = []

    def patched(**kwargs):
        inner = kwargs["run_epoch"]

        def run_epoch(epoch):
            if epoch == stop_at and not ran.count("stopped"):
                ran.append("stopped")
                raise KeyboardInterrupt
            ran.append(epoch)
            return inner(epoch)

        return fit(**{**kwargs, "run_epoch": run_epoch})

    monkeypatch.setattr(classifier_stage, "fit", patched)
    with pytest.raises(KeyboardInterrupt):
        run(resume)
    result = run(resume)
    return result, ran


def test_adversarial_training_runs_and_resumes_exactly(tmp_path, monkeypatch):
    data = _prepared()
    straight, meta, history = train_adversarial(data, SGD_SPEC, PGD, 0, CPU, tmp_path / "a.resume")
    assert [row["epoch"] for row in history] == [1, 2] and meta["arch"] == "small_cnn"
    (resumed, _, resumed_history), ran = _interrupt_then_resume(
        monkeypatch, lambda path: train_adversarial(data, SGD_SPEC, PGD, 0, CPU, path), tmp_path / "b.resume", 1
    )
    assert ran == [0, "stopped", 1], "the second attempt resumes after epoch 1"
    assert _same_state(straight.state_dict(), resumed.state_dict())
    assert _without_seconds(resumed_history) == _without_seconds(history)


def test_adversarial_training_trains_on_adversarial_examples(tmp_path):
    data = _prepared()
    standard, _, _ = train_classifier(data, SGD_SPEC, 0, CPU, tmp_path / "s.resume")
    adversarial, _, _ = train_adversarial(data, SGD_SPEC, PGD, 0, CPU, tmp_path / "a.resume")
    assert not _same_state(standard.state_dict(), adversarial.state_dict())
    zero_budget, _, _ = train_adversarial(data, SGD_SPEC, {**PGD, "eps": 0}, 0, CPU, tmp_path / "z.resume")
    # With eps 0 PGD returns the clean batch, so it is standard training step for step.
    for key, value in standard.state_dict().items():
        torch.testing.assert_close(zero_budget.state_dict()[key], value, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("arch", "params", "transform", "transform_params", "has_discriminator"),
    [
        (
            "deepfill_v2",
            {"channels": 4, "discriminator_channels": 4, "discriminator_layers": 3},
            "rt3",
            {"grid": 4, "copies": 4},
            True,
        ),
        ("ae", {"base_channels": 4, "depth": 2}, "rt2", {"grid": 4, "mask_rate": 0.25}, False),
    ],
)
def test_pretrain_paper_purifiers_one_epoch(tmp_path, arch, params, transform, transform_params, has_discriminator):
    spec = {
        "arch": arch,
        "arch_params": params,
        "image_size": None,
        "transform": transform,
        "transform_params": transform_params,
        "pretrain": {
            "epochs": 1,
            "batch_size": 16,
            "lr": 1e-3,
            "betas": [0.5, 0.999],
            "adv_weight": 0.1,
            "l1_weight": 1.0,
        },
    }
    data = _prepared(n_train=16)
    modules, _model_meta, _, history = pretrain_purifier(data, spec, 0, CPU, tmp_path / "p.resume")
    assert ("discriminator" in modules) == has_discriminator
    assert ("d_loss" in history[0]) == has_discriminator
    assert all(math.isfinite(v) for v in history[0].values())
    if arch == "deepfill_v2":
        assert history[0]["l1"] > history[0]["val_l1"]  # L1 of coarse + refined against one output's
