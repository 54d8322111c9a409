"""Classifier, purifier and the defended model built from them."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from atop.defense import DEFENSES, DefendedModel, build_defense
from atop.defense_kinds import split_defense
from atop.io import CheckpointError, save_checkpoint
from atop.models import CLASSIFIERS, PURIFIERS, build_classifier, build_purifier
from atop.models.classifiers import Normalize
from atop.transforms import build_transform

MEAN = [0.2, 0.4, 0.6]
STD = [0.1, 0.2, 0.3]


def _classifier(num_classes=3, image_size=16, mean=MEAN, std=STD, seed=0):
    torch.manual_seed(seed)
    return build_classifier("small_cnn", num_classes=num_classes, mean=mean, std=std, image_size=image_size, width=4)


def _images(n=4, size=16, seed=0):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _defense(seed=0):
    torch.manual_seed(seed)
    parts = build_purifier("gan_unet", base_channels=4)
    transform = build_transform("rt2", seed=seed, noise_std=0.25, grid=4, mask_rate=0.25)
    return DefendedModel(_classifier().eval(), parts.generator.eval(), transform).eval()


@pytest.mark.parametrize(("num_classes", "size"), [(3, 16), (10, 32)])
def test_classifier_output_shape(num_classes, size):
    model = _classifier(num_classes=num_classes, image_size=size).eval()
    assert model(_images(n=5, size=size)).shape == (5, num_classes)


def test_classifier_normalises_inside_itself():
    model = _classifier().eval()
    buffers = dict(model.named_buffers())
    assert torch.equal(buffers["normalize.mean"].flatten(), torch.tensor(MEAN))
    assert torch.equal(buffers["normalize.std"].flatten(), torch.tensor(STD))
    # The statistics travel with the weights (checkpoints hold them).
    assert {"normalize.mean", "normalize.std"} <= model.state_dict().keys()
    assert isinstance(model.normalize, Normalize)

    # Same weights, identity normalisation, fed pre-normalised images: same logits.
    plain = _classifier(mean=[0.0] * 3, std=[1.0] * 3).eval()
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("normalize.")}
    plain.load_state_dict(state, strict=False)
    x = _images()
    manual = (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    torch.testing.assert_close(model(x), plain(manual), rtol=1e-4, atol=1e-5)
    # ... and the statistics are not ignored.
    assert not torch.allclose(model(x), plain(x), atol=1e-3)


def test_unknown_classifier_arch_names_known_ones():
    with pytest.raises(KeyError, match="small_cnn"):
        build_classifier("resnet9000", num_classes=2, mean=MEAN, std=STD, image_size=16)
    assert "small_cnn" in CLASSIFIERS.names() and "gan_unet" in PURIFIERS.names()


@pytest.mark.parametrize("size", [16, 32])
def test_generator_output_matches_input_and_is_in_unit_interval(size):
    torch.manual_seed(0)
    parts = build_purifier("gan_unet", base_channels=4)
    x = _images(n=3, size=size)
    x_t, mask = build_transform("rt2", seed=0, grid=8 if size == 32 else 4)(x)
    out = parts.generator(x_t * 50 - 25, mask)  # extreme inputs still give [0, 1] images
    assert out.shape == x.shape
    assert out.min() >= 0 and out.max() <= 1
    assert torch.isfinite(out).all()


def test_generator_uses_the_mask():
    torch.manual_seed(0)
    generator = build_purifier("gan_unet", base_channels=4).generator.eval()
    x = _images(n=2)
    zeros = torch.zeros(2, 1, 16, 16)
    assert not torch.equal(generator(x, zeros), generator(x, torch.ones_like(zeros)))


def test_discriminator_returns_patch_scores():
    torch.manual_seed(0)
    parts = build_purifier("gan_unet", base_channels=4)
    assert parts.discriminator is not None
    x = _images(n=3, size=32)
    scores = parts.discriminator(x, torch.zeros(3, 1, 32, 32))
    # One score per overlapping patch, not one per image.
    assert scores.shape == (3, 1, 4, 4)
    as_module = parts.as_module()
    assert set(as_module.keys()) == {"generator", "discriminator"}


def test_defended_model_output_shape_and_randomized_flag():
    defense = _defense()
    assert defense.randomized
    assert defense(_images(n=5)).shape == (5, 3)
    standard = DefendedModel(_classifier().eval())
    assert not standard.randomized
    assert standard(_images(n=5)).shape == (5, 3)
    # Without a purifier the defense is the classifier alone.
    x = _images()
    assert torch.equal(standard(x), standard.classifier(x))


def test_defended_model_train_keeps_classifier_in_eval_mode():
    defense = _defense()
    returned = defense.train()
    assert returned is defense
    assert defense.training and defense.purifier.training
    assert not defense.classifier.training
    assert all(not m.training for m in defense.classifier.modules())
    # BatchNorm running statistics must not move when the defense is "trained".
    before = {k: v.clone() for k, v in defense.classifier.state_dict().items()}
    defense(_images(n=8) * 0.1)
    after = defense.classifier.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    defense.eval()
    assert not defense.training and not defense.classifier.training


def test_defended_model_survives_torchattacks_mode_toggling():
    import torchattacks

    defense = _defense().train()
    torchattacks.FGSM(defense, eps=8 / 255)(_images(n=2), torch.tensor([0, 1]))
    assert not defense.classifier.training


def test_randomized_defense_differs_between_calls_and_repeats_after_reseed():
    defense = _defense()
    x = _images(n=4)
    defense.reseed(11)
    with torch.no_grad():
        first, second = defense(x), defense(x)
        assert not torch.equal(first, second)
        defense.reseed(11)
        assert torch.equal(defense(x), first)
        assert torch.equal(defense(x), second)


def test_purifier_without_transform_and_vice_versa_raise():
    classifier = _classifier()
    generator = build_purifier("gan_unet", base_channels=4).generator
    with pytest.raises(ValueError, match="transform"):
        DefendedModel(classifier, purifier=generator)
    with pytest.raises(ValueError):
        DefendedModel(classifier, transform=build_transform("rt1"))


def test_defense_kinds():
    assert DEFENSES.names() == ["ap", "at", "atop", "custom", "standard"]
    assert DEFENSES["custom"].classifier is None and DEFENSES["custom"].variants_from == "custom_defenses"
    assert DEFENSES["standard"].purifier_stage is None and DEFENSES["standard"].classifier == "standard"
    assert DEFENSES["at"].purifier_stage is None and DEFENSES["at"].classifier == "adversarial"
    assert DEFENSES["ap"].purifier_stage == "pretrained"
    assert DEFENSES["atop"].purifier_stage == "finetuned" and DEFENSES["atop"].classifier == "standard"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("standard", ("standard", None)),
        ("at", ("at", None)),
        ("ap", ("ap", None)),
        ("atop-gan-rt2", ("atop", "gan-rt2")),
        ("ap-ae.v2", ("ap", "ae.v2")),
    ],
)
def test_split_defense(name, expected):
    assert split_defense(name) == expected


@pytest.mark.parametrize(("name", "match"), [("diffpure", "unknown defense 'diffpure'"), ("at-gan", "no purifier")])
def test_split_defense_rejects_bad_names(name, match):
    with pytest.raises(KeyError, match=match):
        split_defense(name)


def _save_classifier(path, stage):
    meta = {
        "kind": "classifier",
        "stage": stage,
        "model": {"arch": "small_cnn", "num_classes": 3, "mean": MEAN, "std": STD, "image_size": 16, "width": 8},
    }
    save_checkpoint(path, build_classifier(**meta["model"]).state_dict(), meta)


def _save_purifier(path, stage, variant="gan-rt2"):
    model = {"arch": "gan_unet", "in_channels": 3, "image_size": None, "base_channels": 4}
    transform = {"name": "rt2", "params": {"noise_std": 0.25, "grid": 4, "mask_rate": 0.25}}
    meta = {"kind": "purifier", "stage": stage, "model": model, "transform": transform, "variant": variant}
    save_checkpoint(path, build_purifier(**model).as_module().state_dict(), meta)


def test_build_defense_names_what_it_was_built_from(tmp_path):
    _save_classifier(tmp_path / "standard.pt", "trained")
    _save_classifier(tmp_path / "at.pt", "adversarially_trained")
    _save_purifier(tmp_path / "finetuned.pt", "finetuned")
    defense, info = build_defense("atop-gan-rt2", tmp_path / "standard.pt", tmp_path / "finetuned.pt", seed=0)
    assert defense.randomized and defense(_images()).shape == (4, 3)
    assert info == {
        "defense_kind": "atop",
        "classifier_stage": "trained",
        "purifier_variant": "gan-rt2",
        "purifier": "gan_unet",
        "transform": "rt2",
    }
    _, info = build_defense("atop", tmp_path / "standard.pt", tmp_path / "finetuned.pt", seed=0)
    assert info["purifier_variant"] == "gan-rt2", "a bare name takes the variant the checkpoint records"
    defense, info = build_defense("at", tmp_path / "at.pt", None, seed=0)
    assert not defense.randomized and info["classifier_stage"] == "adversarially_trained"


@pytest.mark.parametrize(
    ("name", "classifier", "purifier", "match"),
    [
        ("at", "standard.pt", None, "needs the adversarial classifier"),
        ("standard", "at.pt", None, "needs the standard classifier"),
        ("atop-gan-rt2", "at.pt", "finetuned.pt", "needs the standard classifier"),
        ("ap-gan-rt2", "standard.pt", "finetuned.pt", "needs a pretrained purifier"),
        ("atop-ae-rt1", "standard.pt", "finetuned.pt", "needs purifier variant 'ae-rt1'"),
    ],
)
def test_build_defense_rejects_the_wrong_checkpoint(tmp_path, name, classifier, purifier, match):
    _save_classifier(tmp_path / "standard.pt", "trained")
    _save_classifier(tmp_path / "at.pt", "adversarially_trained")
    _save_purifier(tmp_path / "finetuned.pt", "finetuned")
    with pytest.raises(CheckpointError, match=match):
        build_defense(name, tmp_path / classifier, purifier and tmp_path / purifier, seed=0)


def test_normalize_module_is_nn_module_buffer_only():
    norm = Normalize([0.5, 0.5, 0.5], [0.5, 0.5, 0.5])
    assert list(norm.parameters()) == []
    assert isinstance(norm, nn.Module)
    torch.testing.assert_close(norm(torch.ones(1, 3, 2, 2)), torch.ones(1, 3, 2, 2))
