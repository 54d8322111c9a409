"""The evaluation protocol: every attack, faithful AutoAttack, BPDA, StAdv, obfuscation checks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchattacks.attack import Attack

from atop.attacks import ATTACKS, WorstCaseEnsemble, build_attack, config_parameters
from atop.attacks.bpda import IdentityBackwardDefense
from atop.attacks.stadv import apply_flow, flow_smoothness
from atop.checks import cross_attack_checks, input_gradients, sweep_checks
from atop.data import PreparedData
from atop.defense import DefendedModel
from atop.evaluate import evaluate_defense
from atop.transforms import build_transform


def graded(n=48, size=8, seed=0):
    """Two brightness classes with margins spread over [0, 0.2]: robust accuracy falls gradually with eps."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    margin = 0.2 * torch.rand(n, generator=g)
    level = 0.5 + torch.where(y == 1, margin, -margin)
    x = level.view(n, 1, 1, 1) + 0.01 * torch.randn(n, 3, size, size, generator=g)
    return x.clamp(0, 1), y


class Brightness(nn.Module):
    """Mean brightness against 0.5: the exact robust accuracy at Linf eps is the share of margins > eps."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(20.0))

    def forward(self, x):
        score = self.scale * (x.mean(dim=(1, 2, 3)) - 0.5)
        # Eight never-winning extra classes: the reference AutoAttack targets 9 classes.
        losers = [-score.abs() - 5 - k for k in range(8)]
        return torch.stack([-score, score, *losers], dim=1)


class Quantised(nn.Module):
    """Gradient masking by construction: rounding the input has zero gradient almost everywhere."""

    def __init__(self, inner: nn.Module, levels: int = 8):
        super().__init__()
        self.inner, self.levels = inner, levels

    def forward(self, x):
        return self.inner(torch.round(x * self.levels) / self.levels)


def accuracy(model, x, y):
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


SMALL_PARAMS = {
    "fgsm": {"eps": 0.15},
    "pgd_linf": {"eps": 0.15, "alpha": 0.05, "steps": 5},
    "pgd_l2": {"eps": 2.0, "alpha": 0.5, "steps": 8},
    "cw_l2": {"eps": 2.0, "alpha": 0.5, "steps": 8},
    "square": {"eps": 0.15, "n_queries": 100},
    "eot_pgd": {"eps": 0.15, "alpha": 0.05, "steps": 5, "eot": 2},
    "bpda_eot": {"eps": 0.15, "alpha": 0.05, "steps": 5, "eot": 2},
    "pgd_classifier": {"eps": 0.15, "alpha": 0.05, "steps": 5},
    "cw_classifier": {"eps": 0.15, "alpha": 0.05, "steps": 5},
    "aa_standard": {"eps": 0.15, "steps": 10, "n_queries": 100},
    "aa_rand": {"eps": 0.15, "steps": 10, "eot": 2},
}
CONTEXT = {"num_classes": 10, "seed": 0, "draws": 1}


def test_every_attack_is_tested():
    assert set(SMALL_PARAMS) | {"stadv"} == set(ATTACKS.names())


@pytest.mark.parametrize("method", sorted(SMALL_PARAMS))
def test_attack_lowers_accuracy_within_its_budget(method):
    model = DefendedModel(Brightness()).eval()
    x, y = graded()
    torch.manual_seed(0)
    adversarial = build_attack(method, model, SMALL_PARAMS[method], **CONTEXT)(x, y)
    assert adversarial.shape == x.shape and adversarial.min() >= 0 and adversarial.max() <= 1
    delta = (adversarial - x).flatten(1)
    if ATTACKS[method].norm == "Linf":
        assert delta.abs().max() <= SMALL_PARAMS[method]["eps"] + 1e-6
    else:
        assert delta.norm(dim=1).max() <= SMALL_PARAMS[method]["eps"] + 1e-4
    clean, robust = accuracy(model, x, y), accuracy(model, adversarial, y)
    assert clean == 1.0 and robust < 0.75, (method, robust)


@pytest.mark.parametrize("method", sorted(m for m in SMALL_PARAMS if "eps" in config_parameters(m)))
def test_zero_budget_is_a_no_op(method):
    model = DefendedModel(Brightness()).eval()
    x, y = graded(n=8)
    torch.manual_seed(0)
    adversarial = build_attack(method, model, {**SMALL_PARAMS[method], "eps": 0.0}, **CONTEXT)(x, y)
    assert torch.allclose(adversarial, x, atol=1e-7)


def test_aa_standard_agrees_with_reference_autoattack():
    """Our faithful AutoAttack and the reference (pyautoattack) on the same model and samples."""
    pyautoattack = pytest.importorskip("pyautoattack")
    model = Brightness().eval()
    x, y = graded(n=64, seed=3)
    eps = 0.1
    ours = build_attack("aa_standard", model, {"eps": eps}, num_classes=10, seed=0, draws=1)(x, y)
    reference = pyautoattack.AutoAttack(model, norm="Linf", eps=eps, version="standard", seed=0)
    theirs = reference.run_standard_evaluation(x, y, batch_size=64)
    theirs = theirs[0] if isinstance(theirs, tuple) else theirs
    ours_acc, theirs_acc = accuracy(model, ours, y), accuracy(model, theirs, y)
    exact = (graded(n=64, seed=3)[0].mean(dim=(1, 2, 3)) - 0.5).abs().gt(eps).float().mean().item()
    assert abs(ours_acc - theirs_acc) <= 2 / 64, (ours_acc, theirs_acc)
    assert abs(ours_acc - exact) <= 2 / 64, (ours_acc, exact)


def test_aa_standard_attacks_nine_target_classes_like_the_reference():
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 100))
    attack = build_attack("aa_standard", model, {"eps": 0.1}, num_classes=100, seed=0, draws=1)
    apgd, apgd_t, fab_t, square = attack.attacks
    assert apgd.steps == apgd_t.steps == fab_t.steps == 100 and square.n_queries == 5000
    assert apgd_t.n_target_classes == fab_t.n_target_classes == 9
    assert apgd.loss == "ce" and fab_t.multi_targeted


class FixedAttack(Attack):
    """Replaces the chosen samples with fixed images, leaves the others alone."""

    def __init__(self, model, replacement, which):
        super().__init__("Fixed", model)
        self.replacement, self.which = replacement, which

    def forward(self, images, labels):
        out = images.clone()
        for i in range(len(images)):
            matches = (self.which_images == images[i]).flatten(1).all(dim=1)
            if matches.any():
                out[i] = self.replacement
        return out


def test_worst_case_ensemble_keeps_each_samples_worst_attack():
    model = Brightness().eval()
    x, y = graded(n=8)
    dark, bright = torch.zeros(3, 8, 8), torch.ones(3, 8, 8)
    first = FixedAttack(model, None, None)
    breaks_first_half = FixedAttack(model, torch.where(y[0] == 1, dark, bright), None)
    breaks_first_half.which_images = x[:4][y[:4] == y[0]]
    breaks_rest = FixedAttack(model, torch.where(y[4] == 1, dark, bright), None)
    breaks_rest.which_images = x[4:][y[4:] == y[4]]
    del first
    adversarial = WorstCaseEnsemble(model, [breaks_first_half, breaks_rest], draws=1)(x, y)
    broken = model(adversarial).argmax(1) != y
    expected = torch.zeros(8, dtype=torch.bool)
    expected[:4] = y[:4] == y[0]
    expected[4:] = y[4:] == y[4]
    assert torch.equal(broken, expected)


def test_bpda_forward_is_the_defense_and_backward_skips_the_purifier():
    torch.manual_seed(0)
    purifier = nn.Sequential(nn.Conv2d(5, 3, 3, padding=1), nn.Sigmoid())
    generator = lambda x_t, mask: purifier(torch.cat([x_t, torch.ones_like(mask), mask], dim=1))
    wrapper = type("G", (nn.Module,), {"forward": lambda self, a, b: generator(a, b)})()
    wrapper.add_module("net", purifier)
    defense = DefendedModel(Brightness(), wrapper, build_transform("rt2", seed=1, noise_std=0.1, grid=4)).eval()
    x, y = graded(n=4)
    bpda = IdentityBackwardDefense(defense)
    defense.reseed(5)
    full = defense(x)
    defense.reseed(5)
    assert torch.allclose(bpda(x), full)
    xg = x.clone().requires_grad_(True)
    defense.reseed(5)
    (grad,) = torch.autograd.grad(F.cross_entropy(bpda(xg), y), xg)
    defense.reseed(5)
    purified = defense.purify(x).detach().requires_grad_(True)
    (expected,) = torch.autograd.grad(F.cross_entropy(defense.classifier(purified), y), purified)
    assert torch.allclose(grad, expected, atol=1e-6)


def test_stadv_flow_helpers():
    x = torch.rand(2, 3, 8, 8)
    assert torch.allclose(apply_flow(x, torch.zeros(2, 2, 8, 8)), x, atol=1e-6)
    assert flow_smoothness(torch.zeros(2, 2, 8, 8)).max() < 0.05  # only the sqrt(eps) floor
    smooth = torch.full((1, 2, 8, 8), 0.1)
    rough = torch.zeros(1, 2, 8, 8)
    rough[..., ::2, :] = 0.1
    assert flow_smoothness(rough) > flow_smoothness(smooth)


def test_stadv_moves_pixels_and_flips_a_position_classifier():
    """Class = where a vertical bar stands; StAdv moves the bar without adding any colour."""
    size, n = 16, 16
    y = torch.arange(n) % 2
    columns = torch.arange(size).float()
    centre = torch.where(y == 0, 6.0, 9.0).view(n, 1)
    profile = torch.exp(-((columns - centre) ** 2) / (2 * 1.5**2))  # a soft bar: resampling has gradients
    x = profile.view(n, 1, 1, size).expand(n, 3, size, size).contiguous()
    weights = torch.linspace(-1, 1, size)

    class Position(nn.Module):
        def forward(self, images):
            column = images.mean(dim=(1, 2))
            score = 10 * (column * weights).sum(dim=1) / column.sum(dim=1).clamp_min(1e-6)
            return torch.stack([-score, score], dim=1)

    model = Position()
    assert accuracy(model, x, y) == 1.0
    adversarial = build_attack("stadv", model, {"bound": 0.15, "steps": 60, "lr": 0.02, "tau": 0.0}, draws=1)(x, y)
    assert accuracy(model, adversarial, y) < 0.5
    assert adversarial.max() <= 1 and adversarial.min() >= 0


def prepared(x, y):
    tensors = {}
    for split in ("train", "val", "test"):
        tensors[f"x_{split}"] = (x * 255).round().to(torch.uint8)
        tensors[f"y_{split}"] = y
    info = {"num_classes": 10, "mean": [0.5] * 3, "std": [0.25] * 3, "image_shape": list(x.shape[1:])}
    return PreparedData(tensors=tensors, info=info)


SPEC = {
    "n_samples": 48,
    "sample_seed": 0,
    "draws": 2,
    "batch_size": 48,
    "checks": {"gradient_samples": 16, "eps_zero_samples": 8},
}


def test_result_records_threat_model_and_checks():
    data = prepared(*graded())
    defense = DefendedModel(Brightness()).eval()
    seen = evaluate_defense(
        defense,
        "standard",
        "pgd",
        {"method": "pgd_linf", "eps": 0.1, "alpha": 0.03, "steps": 5},
        data,
        SPEC,
        seed=0,
        finetune_attack="fgsm_classifier",
    )
    unseen = evaluate_defense(
        defense,
        "standard",
        "l2",
        {"method": "pgd_l2", "eps": 1.0, "alpha": 0.3, "steps": 5},
        data,
        SPEC,
        seed=0,
        finetune_attack="fgsm_classifier",
    )
    bpda = evaluate_defense(
        defense,
        "standard",
        "bpda",
        {"method": "bpda_eot", "eps": 0.1, "alpha": 0.03, "steps": 5, "eot": 2},
        data,
        SPEC,
        seed=0,
    )
    assert seen["seen"] is True and unseen["seen"] is False and bpda["seen"] is None
    assert bpda["upper_bound"] is True and bpda["gradient"] == "bpda_identity"
    assert seen["upper_bound"] is False and seen["gradient"] == "full"
    assert seen["checks_passed"], seen["checks"]
    assert set(seen["checks"]) == {"robust_not_above_clean", "input_gradients", "zero_budget", "within_budget"}
    assert seen["checks"]["zero_budget"]["max_perturbation"] == 0
    assert unseen["checks"]["within_budget"]["norm"] == "L2" and unseen["checks_passed"], unseen["checks"]


def test_obfuscation_checks_fire_on_a_gradient_masked_model_and_not_on_a_normal_one():
    x, y = graded()
    data = prepared(x, y)
    normal, masked = DefendedModel(Brightness()).eval(), DefendedModel(Quantised(Brightness())).eval()
    assert input_gradients(normal, x[:16], y[:16])["passed"]
    assert not input_gradients(masked, x[:16], y[:16])["passed"]

    def sweep(model):
        points = []
        for index, eps in enumerate([0.0, 0.05, 0.4]):
            r = evaluate_defense(
                model,
                "standard",
                f"pgd@eps={eps}",
                {"method": "pgd_linf", "eps": eps, "alpha": max(eps / 4, 1e-3), "steps": 10},
                data,
                SPEC,
                seed=0,
            )
            r["sweep"] = {"name": "eps", "param": "eps", "value": eps, "index": index}
            points.append(r)
        return points

    normal_checks = sweep_checks(sweep(normal))
    masked_checks = sweep_checks(sweep(masked))
    assert all(c["passed"] for c in normal_checks), normal_checks
    failed = [c for c in masked_checks if not c["passed"]]
    assert any("reaches about 0" in c["claim"] for c in failed), masked_checks

    masked_result = evaluate_defense(
        masked, "standard", "pgd", {"method": "pgd_linf", "eps": 0.4, "alpha": 0.1, "steps": 10}, data, SPEC, seed=0
    )
    assert not masked_result["checks_passed"]
    assert not masked_result["checks"]["input_gradients"]["passed"]


def _result(defense, attack, method, accuracy, n=200, randomized=False):
    """A result whose first ``accuracy * n`` images are right: attacks are nested, as for one model."""
    right = round(accuracy * n)
    return {
        "defense": defense,
        "attack": attack,
        "method": method,
        "norm": "Linf",
        "eps": 0.1,
        "randomized": randomized,
        "robust": {"accuracy": right / n, "n": n},
        "sample_indices": list(range(n)),
        "per_sample": {"robust_correct_fraction": [1.0] * right + [0.0] * (n - right)},
    }


def test_cross_attack_checks():
    fine = [
        _result("atop", "fgsm", "fgsm", 0.6),
        _result("atop", "pgd", "pgd_linf", 0.4),
        _result("atop", "square", "square", 0.5),
    ]
    assert all(c["passed"] for c in cross_attack_checks(fine))
    fishy = [
        _result("atop", "fgsm", "fgsm", 0.2),
        _result("atop", "pgd", "pgd_linf", 0.6),
        _result("atop", "square", "square", 0.3),
    ]
    checks = cross_attack_checks(fishy)
    assert len(checks) == 2 and not any(c["passed"] for c in checks)
    assert {c["claim"] for c in checks} == {"FGSM never beats PGD", "white-box PGD beats black-box Square"}


@pytest.mark.parametrize("method, minimum", [("aa_standard", 4), ("aa_rand", 3)])
def test_autoattack_names_too_few_classes_before_attacking(method, minimum):
    """torchattacks' DLR losses index the 3rd / 4th largest logit: with fewer classes it crashes mid-attack."""
    model = DefendedModel(Brightness()).eval()
    with pytest.raises(
        ValueError, match=rf"{method} needs at least {minimum} classes .* this dataset has {minimum - 1}"
    ):
        build_attack(method, model, SMALL_PARAMS[method], **{**CONTEXT, "num_classes": minimum - 1})
    build_attack(method, model, SMALL_PARAMS[method], **{**CONTEXT, "num_classes": minimum})
