"""Paper-scale registry entries: WRN / ResNet classifiers, DeepFill v2 / AE purifiers, RobustBench checkpoints, RT3."""

from __future__ import annotations

import hashlib

import pytest
import torch
import torch.nn.functional as F

from atop.defense import DefendedModel
from atop.io import CheckpointError
from atop.models import CLASSIFIERS, PURIFIERS, build_classifier, build_purifier
from atop.models.classifiers import WideResNet, load_robustbench_classifier
from atop.models.purifiers import ContextualAttention, ResizedPurifier, load_initial_weights
from atop.transforms import build_transform

MEAN, STD = [0.49, 0.48, 0.45], [0.25, 0.24, 0.26]


def _images(n=2, size=32, seed=0):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _count(model) -> int:
    return sum(p.numel() for p in model.parameters())


CLASSIFIER_CASES = [
    ("small_cnn", {"width": 4}, 32),
    ("resnet18", {}, 32),
    ("resnet34", {}, 32),
    ("resnet50", {}, 32),
    ("resnet18", {"stem": "imagenet"}, 64),
    ("resnet34", {"stem": "imagenet"}, 64),
    ("wrn_28_10", {}, 32),
    ("wide_resnet", {"depth": 10, "widen_factor": 1}, 32),
]


@pytest.mark.parametrize(("arch", "params", "size"), CLASSIFIER_CASES, ids=lambda v: str(v))
def test_classifier_forward_backward(arch, params, size):
    torch.manual_seed(0)
    model = build_classifier(arch, num_classes=7, mean=MEAN, std=STD, image_size=size, **params).train()
    x = _images(size=size).requires_grad_(True)
    logits = model(x)
    assert logits.shape == (2, 7) and torch.isfinite(logits).all()
    F.cross_entropy(logits, torch.tensor([1, 5])).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.parameters())


def test_every_classifier_is_covered():
    assert {arch for arch, _, _ in CLASSIFIER_CASES} | {"wrn_70_16"} == set(CLASSIFIERS.names())


@pytest.mark.parametrize(
    ("arch", "params", "millions"),
    [("wrn_28_10", {}, 36.479), ("wrn_70_16", {}, 266.797), ("resnet18", {}, 11.174), ("resnet50", {}, 23.521)],
)
def test_parameter_counts_match_the_published_models(arch, params, millions):
    with torch.device("meta"):  # counts only: no memory, no initialisation cost
        model = build_classifier(arch, num_classes=10, mean=MEAN, std=STD, image_size=32, **params)
    assert _count(model) / 1e6 == pytest.approx(millions, abs=0.001)


def test_resnet_stems():
    cifar = build_classifier("resnet18", num_classes=10, mean=MEAN, std=STD, image_size=32)
    imagenet = build_classifier("resnet18", num_classes=10, mean=MEAN, std=STD, image_size=64, stem="imagenet")
    assert cifar.stem(_images()).shape[-1] == 32  # 3x3 conv, no pooling
    assert imagenet.stem(_images(size=64)).shape[-1] == 16  # 7x7 stride 2, then max-pool
    with pytest.raises(ValueError, match="cifar, imagenet"):
        build_classifier("resnet18", num_classes=10, mean=MEAN, std=STD, image_size=32, stem="vgg")


@pytest.mark.parametrize("arch", ["resnet18", "wrn_28_10"])
def test_paper_classifiers_normalise_inside(arch):
    torch.manual_seed(0)
    model = build_classifier(arch, num_classes=3, mean=MEAN, std=STD, image_size=32).eval()
    plain = build_classifier(arch, num_classes=3, mean=[0.0] * 3, std=[1.0] * 3, image_size=32).eval()
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("normalize.")}, strict=False)
    x = _images()
    manual = (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    torch.testing.assert_close(model(x), plain(manual), rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------- RobustBench checkpoints


@pytest.fixture(scope="module")
def robustbench_file(tmp_path_factory):
    """A WRN-28-10 state dict as RobustBench stores it: wrapped, DataParallel-prefixed, with sub_block1."""
    torch.manual_seed(1)
    reference = WideResNet(28, 10, num_classes=10, mean=[0.0] * 3, std=[1.0] * 3).eval()
    state = {f"module.{k}": v for k, v in reference.state_dict().items() if not k.startswith("normalize.")}
    state |= {f"module.sub_block1.{k}": v for k, v in reference.block1.state_dict().items()}
    path = tmp_path_factory.mktemp("robustbench") / "Standard.pt"
    torch.save({"state_dict": state}, path)
    return path, hashlib.sha256(path.read_bytes()).hexdigest(), reference


def test_robustbench_standard_loads_and_takes_unit_interval_images(robustbench_file):
    path, sha256, reference = robustbench_file
    model, meta = load_robustbench_classifier(path, sha256, "wrn_28_10", num_classes=10, image_size=32)
    assert meta["mean"] == [0.0] * 3 and meta["std"] == [1.0] * 3
    x = _images()
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x))
    rebuilt = build_classifier(**meta)  # what a saved checkpoint's metadata rebuilds
    rebuilt.load_state_dict(model.state_dict())


def test_robustbench_checksum_mismatch_is_an_error(robustbench_file):
    path, _sha256, _ = robustbench_file
    with pytest.raises(CheckpointError, match="sha256"):
        load_robustbench_classifier(path, "0" * 64, "wrn_28_10", num_classes=10, image_size=32)


def test_robustbench_file_of_another_model_is_an_error(tmp_path):
    path = tmp_path / "other.pt"
    torch.save(build_classifier("small_cnn", num_classes=10, mean=MEAN, std=STD, image_size=32).state_dict(), path)
    sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(CheckpointError, match=r"missing \['block1\.layer\.0\.bn1"):
        load_robustbench_classifier(path, sha256, "wrn_28_10", num_classes=10, image_size=32)
    with pytest.raises(ValueError, match="wrn_28_10"):
        load_robustbench_classifier(path, sha256, "resnet18", num_classes=10, image_size=32)


# --------------------------------------------------------------------------- purifiers

SMALL_PURIFIERS = {
    "gan_unet": {"base_channels": 4},
    "deepfill_v2": {"channels": 4, "discriminator_channels": 4, "discriminator_layers": 3},
    "ae": {"base_channels": 4},
}


def test_every_purifier_is_covered():
    assert set(SMALL_PURIFIERS) == set(PURIFIERS.names())


@pytest.mark.parametrize("arch", sorted(SMALL_PURIFIERS))
def test_purifier_forward_backward_and_range(arch):
    torch.manual_seed(0)
    parts = build_purifier(arch, **SMALL_PURIFIERS[arch])
    x = _images()
    x_t, mask = build_transform("rt2", seed=0, grid=8)(x)
    outputs = parts.generator.forward_train(x_t * 40 - 20, mask)  # extreme inputs still give [0, 1] images
    for out in outputs:
        assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    torch.testing.assert_close(parts.generator(x_t, mask), parts.generator.forward_train(x_t, mask)[-1])
    loss = sum((out - x).abs().mean() for out in outputs)
    if parts.discriminator is not None:
        scores = parts.discriminator(outputs[-1], mask)
        assert scores.dim() == 4 and scores.shape[0] == 2
        loss = loss - scores.mean()
    loss.backward()
    assert all(p.grad is not None for p in parts.generator.parameters())


def test_deepfill_has_coarse_and_refined_outputs_and_an_sn_patchgan():
    parts = build_purifier("deepfill_v2", **SMALL_PURIFIERS["deepfill_v2"])
    x_t, mask = build_transform("rt1", seed=0, grid=8)(_images())
    coarse, refined = parts.generator.forward_train(x_t, mask)
    assert not torch.equal(coarse, refined)
    assert any("parametrizations.weight" in name for name, _ in parts.discriminator.named_parameters())
    with pytest.raises(ValueError, match="divisible by 8"):
        parts.generator(_images(size=20), torch.zeros(2, 1, 20, 20))


def test_deepfill_default_size_matches_the_official_generator():
    with torch.device("meta"):
        parts = build_purifier("deepfill_v2")
    assert _count(parts.generator) / 1e6 == pytest.approx(4.05, abs=0.02)  # DeepFill v2: about 4.1 M


def test_autoencoder_has_no_discriminator():
    assert build_purifier("ae", base_channels=4).discriminator is None


def test_contextual_attention_copies_only_background():
    torch.manual_seed(0)
    attention = ContextualAttention(rate=2)
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., 12:20, 12:20] = 1
    background = torch.ones(1, 4, 32, 32) + 0.01 * torch.rand(1, 4, 32, 32)
    background = background * (1 - mask) + 100.0 * mask  # hole content that must never be pasted
    out = attention(background, background, mask)
    assert out.shape == background.shape
    assert out.max() < 1.02  # weighted background only
    assert out[..., 12:20, 12:20].min() > 0.9  # and the hole is filled with it


def test_contextual_attention_picks_the_matching_patch():
    attention = ContextualAttention(rate=1, softmax_scale=1000.0)
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., 0:3, 0:3] = 1
    background = torch.randn(1, 6, 8, 8, generator=torch.Generator().manual_seed(3))
    foreground = background.clone()
    foreground[..., 0:4, 0:4] = background[..., 4:8, 4:8]  # the hole looks like the background 4 pixels on
    out = attention(foreground, background, mask)
    torch.testing.assert_close(out[..., 1, 1], background[..., 5, 5], atol=1e-3, rtol=0)


def test_resized_purifier_works_at_its_size_and_returns_the_input_size():
    parts = build_purifier("deepfill_v2", image_size=64, **SMALL_PURIFIERS["deepfill_v2"])
    assert isinstance(parts.generator, ResizedPurifier)
    seen = []
    parts.generator.inner.coarse.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape))
    x_t, mask = build_transform("rt2", seed=0, grid=8)(_images())
    out = parts.generator(x_t, mask)
    assert seen == [torch.Size([2, 5, 64, 64])]  # image, ones and mask at 64 x 64
    assert out.shape == (2, 3, 32, 32) and 0 <= out.min() and out.max() <= 1
    assert len(parts.generator.forward_train(x_t, mask)) == 2


def test_initial_weights_load_and_mismatch_is_an_error(tmp_path):
    torch.manual_seed(0)
    source = build_purifier("deepfill_v2", **SMALL_PURIFIERS["deepfill_v2"])
    path = tmp_path / "generator.pt"
    torch.save(source.generator.state_dict(), path)
    target = build_purifier("deepfill_v2", image_size=64, **SMALL_PURIFIERS["deepfill_v2"])
    load_initial_weights(target, path, hashlib.sha256(path.read_bytes()).hexdigest())
    for key, value in source.generator.state_dict().items():
        assert torch.equal(target.generator.inner.state_dict()[key], value)
    with pytest.raises(CheckpointError, match="sha256"):
        load_initial_weights(target, path, "f" * 64)
    wrong = build_purifier("deepfill_v2", channels=8)
    with pytest.raises(CheckpointError, match="does not fit the purifier's generator"):
        load_initial_weights(wrong, path)
    whole = tmp_path / "whole.pt"
    autoencoder = build_purifier("ae", base_channels=4)
    state = {f"generator.{k}": v for k, v in autoencoder.generator.state_dict().items()}
    torch.save({**state, "discriminator.net.0.weight": torch.zeros(1)}, whole)
    with pytest.raises(CheckpointError, match="no discriminator"):
        load_initial_weights(build_purifier("ae", base_channels=4), whole)


# --------------------------------------------------------------------------- RT3 inside the defended model


class _Recorder(torch.nn.Module):
    def __init__(self, reply):
        super().__init__()
        self.reply, self.calls = reply, []

    def forward(self, x_t, mask):
        self.calls.append((x_t.clone(), mask.clone()))
        return self.reply(x_t, mask)


def _classifier():
    return build_classifier("small_cnn", num_classes=3, mean=MEAN, std=STD, image_size=32, width=4).eval()


def test_defended_model_with_rt3_takes_every_pixel_from_an_inpainted_copy():
    x = _images(n=3)
    echo = _Recorder(lambda x_t, mask: x_t)  # returns its input: masked pixels are 0
    defense = DefendedModel(_classifier(), echo, build_transform("rt3", seed=0, grid=8, copies=4))
    assert torch.equal(defense.purify(x), torch.zeros_like(x))  # no pixel passed through unmasked
    ((x_t, masks),) = echo.calls
    assert x_t.shape == (12, 3, 32, 32)  # 4 copies of 3 images in one purifier call
    per_image = masks.view(4, 3, 1, 32, 32)
    assert torch.equal(per_image.sum(dim=0), torch.ones(3, 1, 32, 32))
    mask_echo = _Recorder(lambda x_t, mask: mask.expand(-1, 3, -1, -1))
    defense = DefendedModel(_classifier(), mask_echo, build_transform("rt3", seed=0, grid=8, copies=4))
    assert torch.equal(defense.purify(x), torch.ones_like(x))
    assert defense(x).shape == (3, 3)
