"""Attacks on randomized models: no attack may flatter a defense whose forward pass is a random draw.

The toy: two brightness classes with margins spread over [0, 0.2], and a classifier
whose logits carry Gaussian noise, so one forward pass is one noisy draw - the
situation of RT + purifier + classifier. An attack judged on one pass keeps lucky
draws; its multi-draw accuracy then sits above EOT-PGD's at the same budget.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from atop.attacks import ATTACKS, DEFAULT_EOT, build_attack, effective_parameters
from atop.attacks.eot import BatchedEOTPGD, cw_margin
from atop.data import PreparedData
from atop.defense import DefendedModel
from atop.evaluate import evaluate_defense
from atop.report.reference import join_reference, load_reference
from atop.report.results import load_results

from report_fixtures import make_result, write_results

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "config" / "reference" / "paper.csv"
SIZE = 8
PIXELS = 3 * SIZE * SIZE
DRAWS = 16


def graded(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    margin = 0.2 * torch.rand(n, generator=g)
    level = 0.5 + torch.where(y == 1, margin, -margin)
    x = level.view(n, 1, 1, 1) + 0.01 * torch.randn(n, 3, SIZE, SIZE, generator=g)
    return x.clamp(0, 1), y


class NoisyBrightness(nn.Module):
    """Mean brightness against 0.5, plus Gaussian logit noise: every forward pass is a random draw."""

    randomized = True

    def __init__(self, noise: float = 1.0, scale: float = 20.0):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(scale))
        self.noise = noise

    def forward(self, x):
        score = self.scale * (x.mean(dim=(1, 2, 3)) - 0.5)
        score = score + self.noise * torch.randn_like(score)
        # Eight never-winning, all-negative extra classes (AutoAttack targets 9 classes).
        losers = [-score.abs() - 5 - k for k in range(8)]
        return torch.stack([-score, score, *losers], dim=1)


class Deterministic(NoisyBrightness):
    randomized = False

    def __init__(self):
        super().__init__(noise=0.0)


def multi_draw_accuracy(model, x, y, draws=DRAWS):
    torch.manual_seed(123)
    with torch.no_grad():
        return sum((model(x).argmax(1) == y).float().mean().item() for _ in range(draws)) / draws


def run(method, model, params, seed=0, draws=DRAWS):
    x, y = graded()
    torch.manual_seed(seed)
    attack = build_attack(method, model, params, eot=8, num_classes=10, seed=seed, draws=draws)
    adversarial = attack(x, y)
    return x, y, adversarial


# Noise of a 64-image, 16-draw accuracy: the two attacks differ in their random starts and draws.
TOLERANCE = 0.06


# --------------------------------------------------------------------------- item 1: cw_l2


def test_cw_margin_is_right_for_negative_logits():
    logits = torch.tensor([[-5.0, -2.0, -9.0], [-1.0, -3.0, -4.0]])
    labels = torch.tensor([0, 0])
    # Image 0: best other is -2 (class 1), true -5 -> +3; image 1: best other -3, true -1 -> -2.
    assert torch.allclose(cw_margin(logits, labels), torch.tensor([3.0, -2.0]))


def test_cw_l2_is_as_strong_as_eot_pgd_l2_on_a_randomized_model():
    """CW-L2 keeping the smallest 'success' judged on one noisy pass returned almost-clean images."""
    model = NoisyBrightness()
    eps = 1.5  # moves the mean brightness by up to eps / sqrt(pixels) = 0.108: half the margins
    x, y, cw = run("cw_l2", model, {"eps": eps, "alpha": 0.4, "steps": 20})
    _, _, pgd = run("pgd_l2", model, {"eps": eps, "alpha": 0.4, "steps": 20})
    assert (cw - x).flatten(1).norm(dim=1).max() <= eps + 1e-4
    clean, cw_acc, pgd_acc = (multi_draw_accuracy(model, a, y) for a in (x, cw, pgd))
    assert cw_acc <= pgd_acc + TOLERANCE, (clean, cw_acc, pgd_acc)
    assert cw_acc < clean - 0.3, (clean, cw_acc)


def test_l2_pgd_steps_along_the_unit_gradient_and_projects_onto_the_ball():
    model = Deterministic()
    x, y = graded(n=8)
    attack = BatchedEOTPGD(model, eps=0.5, alpha=0.3, steps=1, eot_iter=1, random_start=False, norm="L2")
    one = attack(x, y)
    assert torch.allclose((one - x).flatten(1).norm(dim=1), torch.full((8,), 0.3), atol=1e-4)
    attack.steps = 5
    five = attack(x, y)
    assert torch.allclose((five - x).flatten(1).norm(dim=1), torch.full((8,), 0.5), atol=1e-4)


# --------------------------------------------------------------------------- item 2: APGD on every image


@pytest.mark.parametrize("method", ["aa_rand", "aa_standard"])
def test_apgd_attacks_every_image_it_is_given(method):
    """torchattacks' APGD returns images one clean pass got wrong, and unfooled ones, unperturbed."""
    model = NoisyBrightness(noise=3.0)  # small margins: about half of the single clean passes are wrong
    x, y = graded()
    params = {"eps": 0.05, "steps": 10, "eot": 2} if method == "aa_rand" else {"eps": 0.05, "steps": 10}
    ensemble = build_attack(method, model, params, num_classes=10, seed=0, draws=4)
    apgd = ensemble.attacks[0]
    torch.manual_seed(0)
    adversarial = apgd(x, y)
    moved = (adversarial - x).flatten(1).abs().amax(dim=1)
    assert (moved > 0).all(), f"{int((moved == 0).sum())} of {len(x)} images came back clean"


def test_aa_rand_is_as_strong_as_eot_pgd_on_a_randomized_model():
    model = NoisyBrightness(noise=2.0)
    eps = 0.08
    x, y, aa = run("aa_rand", model, {"eps": eps, "steps": 20, "eot": 8})
    _, _, pgd = run("eot_pgd", model, {"eps": eps, "alpha": eps / 4, "steps": 20, "eot": 8})
    assert (aa - x).abs().max() <= eps + 1e-6
    aa_acc, pgd_acc = multi_draw_accuracy(model, aa, y), multi_draw_accuracy(model, pgd, y)
    assert aa_acc <= pgd_acc + TOLERANCE, (aa_acc, pgd_acc)


# --------------------------------------------------------------------------- item 3: StAdv


def test_stadv_uses_eot_on_randomized_models_by_default():
    assert effective_parameters("stadv", {}, randomized=True, eot=12)["eot"] == 12
    assert effective_parameters("stadv", {}, randomized=False, eot=12)["eot"] == 1
    attack = build_attack("stadv", NoisyBrightness(), {}, eot=6, draws=3)
    assert attack.eot_iter == 6 and attack.draws == 3


def test_stadv_keeps_the_iterate_with_the_lowest_multi_draw_accuracy():
    """One lucky draw must not pick the returned iterate: it is never worse than clean over many draws."""
    model = NoisyBrightness(noise=3.0)
    x, y = graded(n=32)
    torch.manual_seed(0)
    attack = build_attack("stadv", model, {"bound": 0.1, "steps": 5, "eot": 1}, draws=32)
    adversarial = attack(x, y)
    assert multi_draw_accuracy(model, adversarial, y, draws=64) <= multi_draw_accuracy(model, x, y, draws=64) + 0.03


# --------------------------------------------------------------------------- item 4: EOT for every gradient attack


@pytest.mark.parametrize("method", ["fgsm", "pgd_linf", "pgd_l2", "cw_l2", "stadv"])
def test_gradient_attacks_default_to_eot_on_randomized_models_only(method):
    params = {"fgsm": {"eps": 0.1}, "stadv": {}}.get(method, {"eps": 0.1, "alpha": 0.05, "steps": 2})
    randomized = build_attack(method, NoisyBrightness(), params, eot=5, num_classes=10, seed=0, draws=2)
    deterministic = build_attack(method, Deterministic(), params, eot=5, num_classes=10, seed=0, draws=2)
    assert randomized.eot_iter == 5 and deterministic.eot_iter == 1
    with pytest.raises(ValueError, match="needs the evaluation's eot"):
        effective_parameters(method, params, randomized=True)


def test_eot_must_be_auto_or_a_positive_integer():
    with pytest.raises(ValueError, match="eot must be 'auto' or an integer"):
        build_attack("pgd_linf", NoisyBrightness(), {"eps": 0.1, "alpha": 0.05, "steps": 2, "eot": 0})


def test_fgsm_with_eot_is_as_strong_as_one_step_eot_pgd():
    model = NoisyBrightness(noise=2.0)
    x, y, fgsm = run("fgsm", model, {"eps": 0.08})
    _, _, one_step = run("eot_pgd", model, {"eps": 0.08, "alpha": 0.08, "steps": 1, "eot": 8, "random_start": False})
    assert torch.equal(fgsm, one_step)  # FGSM is one EOT-averaged signed step of size eps
    assert multi_draw_accuracy(model, fgsm, y) < multi_draw_accuracy(model, x, y) - 0.2


# --------------------------------------------------------------------------- item 7: recorded parameters


def prepared(x, y):
    tensors = {}
    for split in ("train", "val", "test"):
        tensors[f"x_{split}"] = (x * 255).round().to(torch.uint8)
        tensors[f"y_{split}"] = y
    info = {"num_classes": 10, "mean": [0.5] * 3, "std": [0.25] * 3, "image_shape": list(x.shape[1:])}
    return PreparedData(tensors=tensors, info=info)


SPEC = {
    "n_samples": 8,
    "sample_seed": 0,
    "draws": 2,
    "eot": 3,
    "batch_size": 8,
    "checks": {"gradient_samples": 4, "eps_zero_samples": 0},
}


class NoisyDefense(DefendedModel):
    """The toy as a defended model (classifier only) that says it is randomized."""

    @property
    def randomized(self) -> bool:
        return True


def test_results_record_the_effective_parameters_defaults_included():
    data = prepared(*graded(n=8))
    aa = evaluate_defense(
        DefendedModel(Deterministic()).eval(), "standard", "aa", {"method": "aa_rand", "eps": 0.05}, data, SPEC, 0
    )
    assert aa["steps"] == 100 and aa["params"]["steps"] == 100  # the builder's default, not "1"
    assert aa["params"] == {"eps": 0.05, "norm": "Linf", "steps": 100, "eot": 1}
    assert aa["eot"] == 1
    pgd = evaluate_defense(
        NoisyDefense(NoisyBrightness()).eval(),
        "ap",
        "pgd",
        {"method": "pgd_linf", "eps": 0.05, "alpha": 0.02, "steps": 2},
        data,
        SPEC,
        0,
    )
    assert pgd["eot"] == 3 and pgd["params"] == {"eps": 0.05, "alpha": 0.02, "steps": 2, "random_start": True, "eot": 3}
    assert pgd["randomized"] is True and pgd["gradient"] == "full"


def test_schema_default_eot_equals_the_code_default():
    schema = yaml.safe_load((ROOT / "config" / "schema.yaml").read_text())
    assert schema["properties"]["evaluation"]["properties"]["eot"]["default"] == DEFAULT_EOT


# --------------------------------------------------------------------------- item 8: classifier-only attacks


class AddPurifier(nn.Module):
    """A purifier that changes the gradient: it flips the brightness around 0.5."""

    def forward(self, x_t, mask):
        return 1 - x_t


@pytest.mark.parametrize("method", ["pgd_classifier", "cw_classifier"])
def test_classifier_only_attacks_take_the_classifiers_gradient_at_the_input(method):
    from atop.transforms import build_transform

    classifier = Deterministic()
    defense = DefendedModel(classifier, AddPurifier(), build_transform("rt1", seed=0, grid=2, mask_rate=0.0)).eval()
    x, y = graded(n=16)
    params = {"eps": 0.1, "alpha": 0.02, "steps": 5, "random_start": False}
    on_defense = build_attack(method, defense, params)(x, y)
    loss = "cw" if method == "cw_classifier" else "ce"
    alone = BatchedEOTPGD(classifier, eps=0.1, alpha=0.02, steps=5, eot_iter=1, random_start=False, loss=loss)(x, y)
    assert torch.allclose(on_defense, alone)
    # The classifier's gradient pushes the brightness across 0.5: wrong for the classifier alone.
    with torch.no_grad():
        assert (classifier(on_defense).argmax(1) == y).float().mean() < 0.5
    entry = ATTACKS[method]
    assert entry.gradient == "classifier_only" and entry.upper_bound and entry.norm == "Linf"
    with pytest.raises(ValueError, match="needs a defended model"):
        build_attack(method, nn.Linear(2, 2), params)


def test_classifier_only_results_join_the_papers_rt_ablation_rows(tmp_path):
    results = [
        make_result(
            "atop-gan-rt2", "pgd_classifier", 0.8, method="pgd_classifier", gradient="classifier_only", upper_bound=True
        ),
        make_result(
            "atop-gan-rt2", "cw_classifier", 0.85, method="cw_classifier", gradient="classifier_only", upper_bound=True
        ),
    ]
    write_results(tmp_path, results)
    frame, _ = load_results([tmp_path])
    joined = join_reference(frame, load_reference([REFERENCE]), "cifar10")
    ablation = joined[joined["paper_setting"].str.startswith("RT x FT") & (joined["paper_rt"] == "rt2")]
    ours = ablation[(ablation["paper_defense"] == "atop") & (ablation["paper_dataset"] == "cifar10")]
    by_attack = {row["paper_attack"]: row for _, row in ours.iterrows()}
    assert by_attack["pgd"]["run_attack"] == "pgd_classifier" and by_attack["pgd"]["status"] == "comparable"
    assert by_attack["cw"]["run_attack"] == "cw_classifier" and by_attack["cw"]["status"] == "comparable"
    assert math.isclose(by_attack["pgd"]["run_value"], 80.0) and math.isclose(by_attack["cw"]["run_value"], 85.0)


# --------------------------------------------------------------------------- selective EOT (protocols.py)


def test_selective_eot_is_as_strong_as_eot_pgd_on_a_randomized_model():
    """Selective EOT (the draws nearest a misclassification weigh most) against the known-strong mean."""
    model = NoisyBrightness(noise=2.0)
    eps = 0.08
    params = {"eps": eps, "alpha": eps / 4, "steps": 20, "eot": 8}
    x, y, selective = run("eot_pgd", model, {**params, "eot_weighting": "selective"})
    _, _, mean = run("eot_pgd", model, params)
    assert (selective - x).abs().max() <= eps + 1e-6
    clean = multi_draw_accuracy(model, x, y)
    selective_acc, mean_acc = multi_draw_accuracy(model, selective, y), multi_draw_accuracy(model, mean, y)
    assert selective_acc <= mean_acc + TOLERANCE, (selective_acc, mean_acc)
    assert selective_acc < clean - 0.2, (clean, selective_acc)


def test_selective_eot_on_a_deterministic_model_is_the_mean():
    """Every draw alike: uniform weights, the same gradient as the mean (up to rounding)."""
    from atop.attacks.eot import BatchedEOTPGD

    model = Deterministic()
    x, y = graded(16)
    mean = BatchedEOTPGD(model, eps=0.05, alpha=0.01, steps=1, eot_iter=4)
    selective = BatchedEOTPGD(model, eps=0.05, alpha=0.01, steps=1, eot_iter=4, eot_weighting="selective")
    mean.fooled = selective.fooled = torch.zeros(len(x), dtype=torch.bool)
    assert torch.allclose(selective.eot_gradient(x, y), mean.eot_gradient(x, y), atol=1e-6)


def test_selective_eot_weights_the_draw_nearest_a_misclassification():
    """Two draws with opposite gradients: the mean cancels them, selective EOT follows the riskier one."""
    from atop.attacks.eot import BatchedEOTPGD

    class TwoDraws(nn.Module):
        randomized = True

        def __init__(self):
            super().__init__()
            self.anchor = nn.Parameter(torch.zeros(1))
            self.calls = 0

        def forward(self, x):  # the first replica block sees +slope, the second -slope (one image each)
            n = len(x) // 2
            brightness = x.mean(dim=(1, 2, 3)) - 0.5
            score = torch.cat([4 * brightness[:n] + 0.1, -1 * brightness[n:] + 3.0])
            return torch.stack([score, -score], dim=1)  # class 0 right while score > 0

    x = torch.full((1, 3, SIZE, SIZE), 0.5)
    y = torch.tensor([0])
    attack = BatchedEOTPGD(TwoDraws(), eps=0.1, alpha=0.01, steps=1, eot_iter=2, eot_weighting="selective")
    attack.fooled = torch.zeros(1, dtype=torch.bool)
    gradient = attack.selective_gradient(x, y)
    # the first draw (score 0.1, near the boundary) has the larger loss: its gradient (lowering
    # brightness lowers the score) dominates, so the step darkens the image
    assert gradient.sum() < 0
    with pytest.raises(ValueError, match="eot_weighting must be one of"):
        BatchedEOTPGD(TwoDraws(), eot_weighting="max")
