"""The GPU fast path (config performance.*): resolution, and that each switch runs and stays honest.

No GPU here: the switches are exercised on the CPU (bf16 autocast and channels_last exist
there too); their speed is measured by benchmarks/gpu_fastpath.py on a GPU machine.
"""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
import torch.nn.functional as F
from test_evaluation_protocol import SMALL_PARAMS
from test_training import CLASSIFIER_SPEC, CPU, _prepared

from atop import cli
from atop.attacks import ATTACKS, build_attack
from atop.defense import DefendedModel, fast_defense
from atop.evaluate import evaluate_defense
from atop.fastpath import FastPath
from atop.models import build_classifier, build_purifier
from atop.train.classifier import classifier_meta, train_classifier
from atop.train.purifier import finetune_purifier, pretrain_purifier
from atop.transforms import build_transform

from synthetic_data import PURIFIER_SPEC, finetune_spec

BF16 = FastPath(channels_last=True, autocast="bf16")


def test_auto_is_off_on_a_cpu_and_on_on_cuda():
    assert FastPath.resolve(None, "training", CPU) == FastPath()
    assert FastPath.resolve({}, "evaluation", CPU).precision == "fp32"
    cuda = FastPath.resolve(None, "training", torch.device("cuda"))
    assert (cuda.channels_last, cuda.tf32, cuda.autocast, cuda.compile) == (True, True, "none", False)
    assert cuda.precision == "tf32"
    explicit = FastPath.resolve(
        {"evaluation": {"channels_last": True, "tf32": True, "autocast": "bf16"}}, "evaluation", CPU
    )
    assert explicit.channels_last and not explicit.tf32, "TF32 does not exist on a CPU"
    assert explicit.record() == {
        "channels_last": True,
        "tf32": False,
        "autocast": "bf16",
        "compile": False,
        "precision": "bf16-autocast",
    }


@pytest.mark.parametrize(
    "performance, phase, message",
    [
        ({"training": {"autocast": "fp16"}}, "training", "performance.training.autocast: 'fp16'"),
        (
            {"evaluation": {"channel_last": True}},
            "evaluation",
            "performance.evaluation: unknown setting(s) channel_last",
        ),
        ({}, "report", "performance phase 'report'"),
    ],
)
def test_bad_settings_are_named(performance, phase, message):
    with pytest.raises(ValueError) as error:
        FastPath.resolve(performance, phase, CPU)
    assert message in str(error.value)


def test_channels_last_changes_the_layout_not_the_gradients():
    data = _prepared()
    model = build_classifier(**classifier_meta(data, CLASSIFIER_SPEC)).train()
    twin = copy.deepcopy(model)
    layout = FastPath(channels_last=True)
    layout.prepare(twin)
    x, y = data.images("train")[:16], data.labels("train")[:16]
    exact = torch.autograd.grad(F.cross_entropy(model(x), y), list(model.parameters()))
    fast = torch.autograd.grad(F.cross_entropy(twin(layout.inputs(x)), y), list(twin.parameters()))
    assert twin.features[0].weight.is_contiguous(memory_format=torch.channels_last)
    for a, b in zip(exact, fast):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)


def test_bf16_classifier_training_changes_the_weights_not_the_outcome(tmp_path):
    data = _prepared()
    exact, _, exact_history = train_classifier(data, CLASSIFIER_SPEC, 0, CPU, tmp_path / "a.resume")
    mixed, _, mixed_history = train_classifier(data, CLASSIFIER_SPEC, 0, CPU, tmp_path / "c.resume", BF16)
    assert any(not torch.equal(mixed.state_dict()[k], v) for k, v in exact.state_dict().items())
    assert all(math.isfinite(row["train_loss"]) for row in mixed_history)
    assert mixed_history[-1]["val_accuracy"] >= exact_history[-1]["val_accuracy"] - 0.15
    # A checkpoint trained channels_last loads into a fresh, ordinary model.
    fresh = build_classifier(**classifier_meta(data, CLASSIFIER_SPEC))
    fresh.load_state_dict(mixed.state_dict())


def test_fast_purifier_pretraining_and_finetuning_run_in_bf16(tmp_path):
    data = _prepared()
    classifier, _, _ = train_classifier(data, CLASSIFIER_SPEC, 0, CPU, tmp_path / "c.resume")
    modules, model_meta, transform_meta, history = pretrain_purifier(
        data, PURIFIER_SPEC, 0, CPU, tmp_path / "p.resume", BF16
    )
    assert all(math.isfinite(v) for row in history for v in row.values())
    spec = finetune_spec()
    _, tuned_history, check = finetune_purifier(
        data, spec, 0, CPU, classifier, modules.state_dict(), model_meta, transform_meta, tmp_path / "f.resume", BF16
    )
    assert all(math.isfinite(v) for row in tuned_history for v in row.values())
    assert 0 <= check["finetuned_val_clean_accuracy"] <= 1


def _defense(data, tmp_path) -> DefendedModel:
    classifier, _, _ = train_classifier(data, CLASSIFIER_SPEC, 0, CPU, tmp_path / "c.resume")
    parts = build_purifier(arch="gan_unet", in_channels=3, **PURIFIER_SPEC["arch_params"])
    transform = build_transform("rt2", seed=0, **PURIFIER_SPEC["transform_params"])
    return DefendedModel(classifier.requires_grad_(False), parts.generator.eval().requires_grad_(False), transform)


EVALUATION = {
    "n_samples": 16,
    "sample_seed": 0,
    "draws": 2,
    "batch_size": 8,
    "checks": {"gradient_samples": 4, "eps_zero_samples": 4},
}


def test_bf16_evaluation_runs_the_same_attack_and_passes_its_checks(tmp_path):
    data = _prepared()
    defense = fast_defense(_defense(data, tmp_path), BF16, CPU)
    attack = {"method": "eot_pgd", "eps": 8 / 255, "alpha": 2 / 255, "steps": 3, "eot": 2}
    result = evaluate_defense(defense, "atop", "eot_pgd", attack, data, EVALUATION, 0)
    assert result["robust"]["accuracy"] <= result["clean"]["accuracy"]
    assert result["checks"]["input_gradients"]["passed"], result["checks"]
    logits = defense(data.images("test")[:4])
    assert logits.dtype == torch.float32, "autocast must hand fp32 logits to the losses"


def test_compiled_evaluation_matches_the_eager_one(tmp_path):
    data = _prepared()
    eager = _defense(data, tmp_path).classifier
    compiled = fast_defense(DefendedModel(eager), FastPath(compile=True), CPU)
    x = data.images("test")[:8]
    torch.testing.assert_close(compiled(x), eager(x), rtol=1e-5, atol=1e-6)


def test_every_result_records_its_precision(tmp_path):
    """Through the CLI: a bf16 evaluation says so in its result, an exact one says fp32."""
    spec = {
        "experiment": "fast",
        "seed": 0,
        "device": "cpu",
        "data": {"dataset": "digits", "image_size": 8, "limit": 120, "val_size": 20, "test_size": 40, "split_seed": 0},
    }
    data = tmp_path / "data.pt"
    assert (
        cli.main(
            [
                "prepare-data",
                "--spec",
                json.dumps(spec),
                "--out-data",
                str(data),
                "--out-manifest",
                str(tmp_path / "manifest.json"),
            ]
        )
        == 0
    )
    classifier = tmp_path / "classifier.pt"
    train = {**spec, "classifier": {**CLASSIFIER_SPEC, "epochs": 1}, "performance": {"training": {"autocast": "bf16"}}}
    assert (
        cli.main(
            [
                "train-classifier",
                "--spec",
                json.dumps(train),
                "--data",
                str(data),
                "--out-checkpoint",
                str(classifier),
                "--out-curve",
                str(tmp_path / "curve.csv"),
            ]
        )
        == 0
    )
    meta = torch.load(classifier, weights_only=True)["meta"]
    assert meta["performance"]["precision"] == "bf16-autocast"
    for autocast, precision in (("none", "fp32"), ("bf16", "bf16-autocast")):
        out = tmp_path / f"{autocast}.json"
        evaluation = {
            **spec,
            "evaluation": EVALUATION,
            "attack": {"method": "fgsm", "eps": "8/255"},
            "performance": {"evaluation": {"autocast": autocast}},
        }
        assert (
            cli.main(
                [
                    "evaluate",
                    "--spec",
                    json.dumps(evaluation),
                    "--data",
                    str(data),
                    "--defense",
                    "standard",
                    "--attack",
                    "fgsm",
                    "--classifier",
                    str(classifier),
                    "--out",
                    str(out),
                ]
            )
            == 0
        )
        result = json.loads(out.read_text())
        assert result["precision"] == precision and result["performance"]["autocast"] == autocast


@pytest.fixture(scope="module")
def fast_randomized_defense():
    """A 10-class conv defense (AutoAttack's DLR needs >= 4 classes) with the fullest CPU fast path.

    Untrained: this checks that every attack runs in channels_last + bf16, not how well.
    """
    torch.manual_seed(0)
    classifier = (
        build_classifier(arch="small_cnn", num_classes=10, mean=[0.5] * 3, std=[0.25] * 3, width=4, image_size=16)
        .eval()
        .requires_grad_(False)
    )
    parts = build_purifier(arch="gan_unet", in_channels=3, **PURIFIER_SPEC["arch_params"])
    transform = build_transform("rt2", seed=0, **PURIFIER_SPEC["transform_params"])
    defense = fast_defense(
        DefendedModel(classifier, parts.generator.eval().requires_grad_(False), transform), BF16, CPU
    )
    return defense, torch.rand(8, 3, 16, 16), torch.arange(8) % 10


@pytest.mark.parametrize("method", sorted(ATTACKS.names()))
def test_every_attack_runs_through_the_fast_path(fast_randomized_defense, method):
    """On a GPU, auto puts evaluation in channels_last; no attack may depend on the NCHW layout."""
    defense, x, y = fast_randomized_defense
    params = SMALL_PARAMS.get(method, {"bound": 0.05, "steps": 5, "lr": 0.01, "tau": 0.05})
    torch.manual_seed(0)
    adversarial = build_attack(method, defense, params, num_classes=10, seed=0, draws=1)(x, y)
    assert adversarial.shape == x.shape and adversarial.dtype == torch.float32
    assert torch.isfinite(adversarial).all() and adversarial.min() >= 0 and adversarial.max() <= 1
    if "eps" in params and ATTACKS[method].norm == "Linf":
        assert (adversarial - x).abs().max() <= params["eps"] + 1e-6
