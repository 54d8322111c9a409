"""Fine-tuning and AT as the paper and its public code (glin2022/atop) define them.

Reconstruction target x', epoch length and CE warm-up, generator mode under a
defense attack, the resume fingerprint, best-epoch selection of the AT baseline,
and the paper presets' values in the public code's units.
"""

from __future__ import annotations

import importlib.util
import json

import pandas as pd
import pytest
import torch
import yaml

import atop.train.adversarial as adversarial_stage
import atop.train.purifier as purifier_stage
from atop.cli import main
from atop.config import ConfigError
from atop.models import build_classifier, build_purifier
from atop.models.purifiers import ContextualAttention, InpaintingUNet, PatchDiscriminator, Purifier
from atop.train.adversarial import selected_epoch, train_adversarial
from atop.train.loop import fit
from atop.train.purifier import RECON_TARGETS, finetune_purifier, gan_epoch, make_optimizers, pretrain_purifier
from atop.transforms import build_transform

from conftest import REPO, tiny_config
from synthetic_data import PURIFIER_SPEC, brightness_data, finetune_spec

CPU = torch.device("cpu")
SIZE = 16
PRESETS = {p.stem: yaml.safe_load(p.read_text()) for p in sorted((REPO / "config" / "paper").glob("*.yaml"))}


def _classifier():
    torch.manual_seed(0)
    return build_classifier("small_cnn", num_classes=2, mean=[0.5] * 3, std=[0.25] * 3, image_size=SIZE, width=4).eval()


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    data = brightness_data(16, 8, 8, 0, SIZE)
    resume = tmp_path_factory.mktemp("pretrain") / "purifier.resume"
    modules, model_meta, transform_meta, _ = pretrain_purifier(data, PURIFIER_SPEC, 0, CPU, resume)
    return data, modules.state_dict(), model_meta, transform_meta


def _finetune(pretrained, resume, spec=None, state=None):
    data, pretrained_state, model_meta, transform_meta = pretrained
    return finetune_purifier(
        data,
        spec or finetune_spec(),
        0,
        CPU,
        _classifier(),
        state or pretrained_state,
        model_meta,
        transform_meta,
        resume,
    )


# --------------------------------------------------------------------------- 1. what fine-tuning reconstructs


def _real_batches(monkeypatch) -> list[torch.Tensor]:
    """Record the discriminator's inputs; every step scores real, fake (D step), fake (G step)."""
    calls: list[torch.Tensor] = []
    original = PatchDiscriminator.forward

    def recording(self, image, mask):
        calls.append(image.detach().clone())
        return original(self, image, mask)

    monkeypatch.setattr(PatchDiscriminator, "forward", recording)
    return calls


@pytest.mark.parametrize("target", ["adversarial", "clean"])
def test_finetune_discriminator_real_images_are_the_recon_target(pretrained, tmp_path, monkeypatch, target):
    calls = _real_batches(monkeypatch)
    _finetune(pretrained, tmp_path / "r.resume", finetune_spec(recon_target=target, eps=16 / 255))
    real = calls[0]  # one batch of all 16 training images
    clean = pretrained[0].images("train")
    # distance of each real image to its nearest clean training image (batch order is shuffled)
    nearest = (real[:, None] - clean[None]).abs().flatten(2).amax(dim=2).min(dim=1).values
    if target == "clean":
        assert torch.all(nearest == 0)
    else:  # FGSM x': every image moved, by at most eps
        assert torch.all(nearest > 0) and torch.all(nearest <= 16 / 255 + 1e-6)


class _Constant(Purifier):
    """Outputs 0 everywhere (one parameter, so the optimizer has something to hold)."""

    def __init__(self) -> None:
        super().__init__()
        self.bias = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x_t, mask):
        return torch.zeros_like(x_t) + 0 * self.bias


@pytest.mark.parametrize(("target", "expected"), [("clean", "x"), ("adversarial", "1 - x")])
def test_gan_epoch_l1_is_to_the_recon_target(target, expected):
    parts = purifier_stage.PurifierParts(generator=_Constant(), discriminator=None)
    spec = {"batch_size": 8, "lr": 0.0, "betas": [0.5, 0.999], "adv_weight": 0.0, "l1_weight": 1.0}
    x = torch.rand(8, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 0.5  # mean 0.25, 1 - x: 0.75
    transform = build_transform("rt1", seed=0, grid=2, mask_rate=0.0)
    row = gan_epoch(
        parts,
        transform,
        make_optimizers(parts, spec),
        x,
        torch.zeros(8, dtype=torch.long),
        spec,
        0,
        0,
        CPU,
        make_input=lambda xb, yb: 1 - xb,
        recon_target=RECON_TARGETS[target],
    )
    reference = x if expected == "x" else 1 - x
    assert row["l1"] == pytest.approx(reference.mean().item(), rel=1e-5)  # |0 - target| on one output


# --------------------------------------------------------------------------- 3. epoch length and CE warm-up


def test_finetune_epoch_images_sets_the_steps_per_epoch_and_the_ce_warm_up(pretrained, tmp_path, monkeypatch):
    steps: list[bool] = []
    original = Purifier.forward_train
    monkeypatch.setattr(Purifier, "forward_train", lambda self, *a: steps.append(True) or original(self, *a))
    spec = finetune_spec(epochs=3, batch_size=4, epoch_images=8, ce_start_epoch=2)
    _, history, _ = _finetune(pretrained, tmp_path / "e.resume", spec)
    assert len(steps) == 3 * 2  # 8 of the 16 training images per epoch, in batches of 4
    # CE is logged every epoch but enters the generator loss only from 0-based epoch 2
    for row in history:
        ce_in_loss = row["g_loss"] - 0.1 * row["g_adv"] - row["l1"]
        assert ce_in_loss == pytest.approx(0.5 * row["ce"] if row["epoch"] >= 3 else 0.0, abs=1e-4)


def test_finetune_epoch_images_beyond_the_training_split_is_a_config_error(pretrained, tmp_path):
    with pytest.raises(ConfigError, match=r"finetune\.epoch_images = 17 is more than the 16 training images"):
        _finetune(pretrained, tmp_path / "x.resume", finetune_spec(epoch_images=17))
    assert not (tmp_path / "x.resume").exists()


# --------------------------------------------------------------------------- 7. generator mode


def test_generator_trains_in_train_mode_after_a_pgd_defense_attack(pretrained, tmp_path, monkeypatch):
    modes: list[bool] = []
    original = Purifier.forward_train

    def recording(self, *args):
        if isinstance(self, InpaintingUNet):
            modes.append(self.training)
        return original(self, *args)

    monkeypatch.setattr(Purifier, "forward_train", recording)
    _finetune(pretrained, tmp_path / "m.resume", finetune_spec(attack="pgd_defense", batch_size=8))
    assert modes == [True, True]  # two generator updates, both in train mode


# --------------------------------------------------------------------------- 6. resume fingerprint


def _epochs_run(monkeypatch) -> list[int]:
    ran: list[int] = []

    def recording(**kwargs):
        inner = kwargs["run_epoch"]
        return fit(**{**kwargs, "run_epoch": lambda epoch: ran.append(epoch) or inner(epoch)})

    monkeypatch.setattr(purifier_stage, "fit", recording)
    return ran


def test_finetune_resume_needs_the_same_starting_weights_not_the_same_checks(pretrained, tmp_path, monkeypatch):
    resume = tmp_path / "ft.resume"
    _finetune(pretrained, resume)
    ran = _epochs_run(monkeypatch)
    _finetune(pretrained, resume, finetune_spec(max_clean_drop=0.5, check_draws=2))
    assert ran == [], "a resume file differing only in the collapse check's settings is used"
    other = {k: v + 0.01 if v.is_floating_point() else v for k, v in pretrained[1].items()}
    _finetune(pretrained, resume, state=other)
    assert ran == [0], "a resume file written from another pre-trained purifier is ignored"


def test_finetune_resume_of_another_classifier_is_ignored(pretrained, tmp_path, monkeypatch):
    resume = tmp_path / "ft.resume"
    _finetune(pretrained, resume)
    ran = _epochs_run(monkeypatch)
    data, state, model_meta, transform_meta = pretrained
    other = _classifier()
    with torch.no_grad():
        next(other.parameters()).add_(0.01)
    finetune_purifier(data, finetune_spec(), 0, CPU, other, state, model_meta, transform_meta, resume)
    assert ran == [0]


# --------------------------------------------------------------------------- 5. AT keeps its best epoch

AT_CLASSIFIER = {
    "arch": "small_cnn",
    "arch_params": {"width": 4},
    "epochs": 3,
    "batch_size": 16,
    "lr": 1e-2,
    "weight_decay": 0.0,
}
AT_ATTACK = {"eps": "8/255", "alpha": "2/255", "steps": 2, "val_steps": 3}


def _scripted_robust_accuracy(monkeypatch, values):
    script = iter(values)
    monkeypatch.setattr(adversarial_stage, "robust_accuracy", lambda *args, **kwargs: next(script))


def test_adversarial_training_keeps_the_best_validation_robust_epoch(tmp_path, monkeypatch):
    data = brightness_data(32, 8, 8, 0, SIZE)
    _scripted_robust_accuracy(monkeypatch, [0.25, 0.75, 0.5])
    best, _, history = train_adversarial(data, AT_CLASSIFIER, AT_ATTACK, 0, CPU, tmp_path / "a.resume")
    assert [row["val_robust_accuracy"] for row in history] == [0.25, 0.75, 0.5]
    assert [row["selected"] for row in history] == [0, 1, 0] and selected_epoch(history) == 2
    # the weights kept are those after epoch 2 (the same run stopped there)
    _scripted_robust_accuracy(monkeypatch, [0.25, 0.75])
    two, _, _ = train_adversarial(data, {**AT_CLASSIFIER, "epochs": 2}, AT_ATTACK, 0, CPU, tmp_path / "b.resume")
    last, _, _ = train_adversarial(data, AT_CLASSIFIER, AT_ATTACK, 0, CPU, tmp_path / "a.resume")  # resumed: done
    for name, tensor in two.state_dict().items():
        assert torch.equal(best.state_dict()[name], tensor)
        assert torch.equal(last.state_dict()[name], tensor), "the best epoch survives in the resume state"


def test_validation_robust_accuracy_is_repeatable_and_below_clean():
    data = brightness_data(8, 32, 8, 0, SIZE)
    model = _classifier()
    x, y = data.images("val"), data.labels("val")
    first = adversarial_stage.robust_accuracy(model, x, y, 32 / 255, 5, seed=3)
    assert first == adversarial_stage.robust_accuracy(model, x, y, 32 / 255, 5, seed=3)
    with torch.no_grad():
        clean = (model(x).argmax(1) == y).float().mean().item()
    assert 0 <= first <= clean
    assert adversarial_stage.robust_accuracy(model, x, y, 0.0, 5, seed=3) == pytest.approx(clean)


def test_train_adversarial_command_records_the_selected_epoch(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    def atop(*args):
        assert main(list(args)) == 0

    data_spec = {"seed": 0, "data": {**tiny_config()["data"], "limit": 80, "val_size": 16, "test_size": 8}}
    atop("prepare-data", "--spec", json.dumps(data_spec), "--out-data", "d.pt", "--out-manifest", "m.json")
    spec = {
        "seed": 0,
        "device": "cpu",
        "classifier": {**AT_CLASSIFIER, "epochs": 2},
        "adversarial_training": {**AT_ATTACK, "val_samples": 8},
    }
    atop(
        "train-adversarial",
        "--spec",
        json.dumps(spec),
        "--data",
        "d.pt",
        "--out-checkpoint",
        "at.pt",
        "--out-curve",
        "c.csv",
    )
    meta = torch.load(tmp_path / "at.pt", weights_only=True)["meta"]
    curve = pd.read_csv(tmp_path / "c.csv")
    assert list(curve.loc[curve["selected"] == 1, "epoch"]) == [meta["selected_epoch"]]
    best = curve.loc[curve["val_robust_accuracy"].idxmax(), "epoch"]  # idxmax: the first maximum
    assert meta["selected_epoch"] == best


# --------------------------------------------------------------------------- 4. DeepFill at the presets' size


def _deepfill_shapes(size: int, image_size: int | None, grid: int, mask_rate: float):
    """Attention map side, mean valid (unmasked) keys, discriminator output side of a small DeepFill
    run as the preset runs it."""
    parts = build_purifier("deepfill_v2", image_size=image_size, channels=4, discriminator_channels=4)
    seen = {}

    def capture(module, args):
        foreground, _, mask = args
        m = torch.nn.functional.interpolate(mask, scale_factor=1 / module.rate, mode="nearest")
        keys_valid = torch.nn.functional.max_pool2d(m, 3, stride=1, padding=1) == 0
        seen["side"] = foreground.shape[-1] // module.rate
        seen["valid"] = keys_valid.flatten(1).sum(1).float()

    attention = next(m for m in parts.generator.modules() if isinstance(m, ContextualAttention))
    attention.register_forward_pre_hook(capture)
    x = torch.rand(4, 3, size, size, generator=torch.Generator().manual_seed(0))
    x_t, mask = build_transform("rt1", seed=0, grid=grid, mask_rate=mask_rate)(x)
    with torch.no_grad():
        assert parts.generator(x_t, mask).shape == x.shape
        scores = parts.discriminator(x, mask)
    return seen["side"], seen["valid"], scores.shape[-1]


DEEPFILL_VARIANTS = [
    (preset, name)
    for preset, config in PRESETS.items()
    for name, variant in config["purifiers"].items()
    if variant["arch"] == "deepfill_v2"
]


@pytest.mark.parametrize(("preset", "variant"), DEEPFILL_VARIANTS, ids=lambda v: str(v))
def test_deepfill_is_not_degenerate_at_the_presets_size(preset, variant):
    config = PRESETS[preset]
    spec = config["purifiers"][variant]
    params = spec["transform_params"]
    side, valid, critic = _deepfill_shapes(
        config["data"]["image_size"], spec.get("image_size"), params["grid"], params.get("mask_rate", 0.25)
    )
    assert side >= 16, f"contextual attention on a {side}x{side} map"
    assert valid.min() >= 0.25 * side * side, "most images must keep background keys to attend to"
    assert critic >= 4, f"discriminator output {critic}x{critic}: a global critic, not a patch GAN"


def test_deepfill_at_32_pixels_is_degenerate():
    """The control: the same check fails where the presets used to run DeepFill."""
    side, valid, critic = _deepfill_shapes(32, None, 8, 0.25)
    assert side == 4 and critic == 1
    assert valid.min() < 0.25 * side * side


# --------------------------------------------------------------------------- 2./3. preset values


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_presets_fine_tune_in_the_public_codes_units(preset):
    ft = PRESETS[preset]["finetune"]
    # public code: batch_real = batch_adv (L1 and discriminator on x'), FGSM 8/255 on the classifier
    assert ft["recon_target"] == "adversarial" and ft["attack"] == "fgsm_classifier" and ft["eps"] == "8/255"
    # 625 batches of 8 per epoch; CE from the 3rd epoch (`if epoch > 2`, 1-based): after 1,250 batches
    assert ft["batch_size"] == 8 and ft["epoch_images"] == 625 * 8
    assert ft["ce_start_epoch"] * ft["epoch_images"] // ft["batch_size"] == 2 * 625
    # g_loss = gan_loss_alpha * hinge(D(detached)) + L1 on [-1, 1] + lambda * CE: no GAN gradient,
    # and L1 on [-1, 1] images is twice the L1 on [0, 1] images
    assert ft["adv_weight"] == 0
    assert ft["l1_weight"] / ft["ce_weight"] == pytest.approx(2 / (0.1 if preset == "imagenette" else 0.05))
    assert (ft["lr"], ft["betas"]) == (1e-4, [0.5, 0.999])
    for variant in PRESETS[preset]["purifiers"].values():
        pre = variant["pretrain"]
        if variant["arch"] == "deepfill_v2":  # gan_loss_alpha 1 : l1_loss_alpha 1 on [-1, 1]
            assert pre["adv_weight"] / pre["l1_weight"] == pytest.approx(0.5)


# --------------------------------------------------------------------------- GPU-hour estimate


def _gpu_hours_module():
    spec = importlib.util.spec_from_file_location("gpu_hours", REPO / "benchmarks" / "gpu_hours.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_hours_counts_fine_tuning_epochs_of_epoch_images_and_purifiers_at_their_size():
    estimate = _gpu_hours_module().estimate
    config = yaml.safe_load((REPO / "config" / "tiny.yaml").read_text())
    config["purifiers"] = {"g": {**PURIFIER_SPEC}}
    config["evaluation"] = {"defenses": ["ap-g", "atop-g"], "attacks": {"fgsm": {"method": "fgsm", "eps": 0.1}}}
    whole = estimate(config)
    n_train = 1_797 - config["data"]["val_size"]
    config["finetune"] = {**config["finetune"], "epoch_images": n_train // 4}
    quarter = estimate(config)
    assert quarter["flops"]["finetune_purifier"] == pytest.approx(whole["flops"]["finetune_purifier"] / 4, rel=1e-3)
    config["purifiers"]["g"] = {**PURIFIER_SPEC, "image_size": 4 * config["data"]["image_size"]}
    resized = estimate(config)
    ratio = resized["flops"]["pretrain_purifier"] / whole["flops"]["pretrain_purifier"]
    assert ratio > 8, "generator and discriminator count at the purifier's own resolution (16x the pixels)"
