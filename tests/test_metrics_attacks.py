"""Accuracy statistics, the attack registry, batched EOT-PGD and one evaluation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from atop.attacks import ATTACKS, BatchedEOTPGD, build_attack
from atop.data import PreparedData
from atop.defense import DefendedModel
from atop.evaluate import evaluate_defense, sample_indices
from atop.metrics import correct_per_draw, summarize, wilson_interval
from atop.transforms import build_transform

MARGIN = 0.1  # class 0 images have mean brightness 0.4, class 1 0.6


# --------------------------------------------------------------------------- helpers


def _separable(n=32, size=16, seed=0):
    """Two classes told apart by brightness; an Linf shift of more than MARGIN flips them."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = (0.5 - MARGIN + 2 * MARGIN * y.float()).view(n, 1, 1, 1) + 0.05 * torch.randn(n, 3, size, size, generator=g)
    return x.clamp(0, 1), y


class Brightness(nn.Module):
    """A small classifier: mean colour -> linear layer."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(3, 2)

    def forward(self, x):
        return self.linear(x.mean(dim=(2, 3)))


def _trained_classifier():
    torch.manual_seed(0)
    model = Brightness()
    x, y = _separable(n=64, seed=1)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    for _ in range(100):
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval().requires_grad_(False)


@pytest.fixture(scope="module")
def classifier():
    model = _trained_classifier()
    x, y = _separable()
    assert (model(x).argmax(1) == y).float().mean().item() == 1.0  # the setup itself works
    return model


class MeanFill(nn.Module):
    """A stand-in purifier: fill removed pixels with the mean of the kept ones."""

    def forward(self, x_t, mask):
        keep = 1 - mask
        fill = (x_t * keep).sum(dim=(2, 3), keepdim=True) / keep.sum(dim=(2, 3), keepdim=True)
        return x_t * keep + fill * mask


def _accuracy(model, x, y):
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


ATTACK_PARAMS = {
    "fgsm": {"eps": 0.15},
    "pgd_linf": {"eps": 0.15, "alpha": 0.05, "steps": 5},
    "eot_pgd": {"eps": 0.15, "alpha": 0.05, "steps": 5, "eot": 2},
}


# --------------------------------------------------------------------------- metrics


def test_wilson_interval_known_values():
    low, high = wilson_interval(0, 10)
    assert low == 0.0 and high == pytest.approx(0.2775, abs=1e-4)
    low, high = wilson_interval(10, 10)
    assert low == pytest.approx(0.7225, abs=1e-4) and high == pytest.approx(1.0, abs=1e-12)
    low, high = wilson_interval(50, 100)
    assert low == pytest.approx(0.4038, abs=1e-4) and high == pytest.approx(0.5962, abs=1e-4)
    assert 0.40 <= low < 0.5 < high <= 0.60
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_wilson_interval_is_symmetric_and_narrows_with_n():
    low, high = wilson_interval(3, 10)
    mirrored = wilson_interval(7, 10)
    assert low == pytest.approx(1 - mirrored[1]) and high == pytest.approx(1 - mirrored[0])
    small = wilson_interval(5, 10)
    large = wilson_interval(500, 1000)
    assert large[1] - large[0] < small[1] - small[0]
    for s in range(1, 10):
        lo, hi = wilson_interval(s, 10)
        assert 0 < lo < s / 10 < hi < 1


def test_wilson_interval_contains_the_observed_proportion_at_the_extremes():
    for n in (1, 4, 10, 200, 397):
        assert wilson_interval(0, n)[0] == 0.0
        assert wilson_interval(n, n)[1] == 1.0
        for s in (0, n):
            lo, hi = wilson_interval(s, n)
            assert lo <= s / n <= hi


def test_summarize_mean_strict_and_interval():
    correct = torch.tensor(
        [
            [True, True, False, True],
            [True, False, False, True],
            [True, True, False, False],
        ]
    )
    summary = summarize(correct)
    assert summary["accuracy"] == pytest.approx(7 / 12)
    assert summary["strict_accuracy"] == pytest.approx(1 / 4)  # only sample 0 is right in every draw
    assert summary["strict_accuracy"] <= summary["accuracy"]
    assert summary["n"] == 4 and summary["draws"] == 3
    low, high = summary["ci95"]
    assert low <= summary["accuracy"] <= high
    assert (low, high) == pytest.approx(wilson_interval(7 / 3, 4))


def test_summarize_single_draw_strict_equals_mean():
    correct = torch.tensor([[True, False, True, True, False]])
    summary = summarize(correct)
    assert summary["accuracy"] == summary["strict_accuracy"] == pytest.approx(0.6)


def test_correct_per_draw_shape_and_batching(classifier):
    x, y = _separable(n=10)
    whole = correct_per_draw(classifier, x, y, draws=2, batch_size=100)
    batched = correct_per_draw(classifier, x, y, draws=2, batch_size=3)
    assert whole.shape == (2, 10) and whole.dtype == torch.bool
    assert torch.equal(whole, batched)
    assert whole.all()
    assert not correct_per_draw(classifier, x, 1 - y, draws=1, batch_size=4).any()


# --------------------------------------------------------------------------- attacks


def test_registry_threat_models():
    assert {"eot_pgd", "fgsm", "pgd_linf"} <= set(ATTACKS.names())
    assert all(ATTACKS[name].norm == "Linf" for name in ATTACK_PARAMS)


@pytest.mark.parametrize("method", sorted(ATTACK_PARAMS))
def test_attack_lowers_accuracy_and_respects_the_budget(classifier, method):
    x, y = _separable()
    eps = ATTACK_PARAMS[method]["eps"]
    torch.manual_seed(0)
    adversarial = build_attack(method, classifier, ATTACK_PARAMS[method])(x, y)
    assert adversarial.shape == x.shape
    assert (adversarial - x).abs().max().item() <= eps + 1e-6
    assert adversarial.min() >= 0 and adversarial.max() <= 1
    clean = _accuracy(classifier, x, y)
    robust = _accuracy(classifier, adversarial, y)
    assert robust <= clean
    assert robust < 0.5, f"{method} with eps {eps} > margin {MARGIN} should flip most images"
    assert not classifier.training


@pytest.mark.parametrize("method", sorted(ATTACK_PARAMS))
def test_attack_stays_in_unit_interval_near_the_bounds(classifier, method):
    x, y = _separable()
    x = torch.where(x > 0.5, torch.ones_like(x), torch.zeros_like(x))  # saturated pixels
    torch.manual_seed(0)
    adversarial = build_attack(method, classifier, ATTACK_PARAMS[method])(x, y)
    assert adversarial.min() >= 0 and adversarial.max() <= 1
    assert (adversarial - x).abs().max().item() <= ATTACK_PARAMS[method]["eps"] + 1e-6


@pytest.mark.parametrize("method", sorted(ATTACK_PARAMS))
def test_zero_budget_leaves_images_unchanged(classifier, method):
    x, y = _separable(n=8)
    torch.manual_seed(0)
    adversarial = build_attack(method, classifier, {**ATTACK_PARAMS[method], "eps": 0.0})(x, y)
    assert torch.equal(adversarial, x)


def test_attack_on_a_randomized_defense_respects_the_budget(classifier):
    defense = DefendedModel(classifier, MeanFill(), build_transform("rt2", seed=0, noise_std=0.1, grid=4)).eval()
    x, y = _separable(n=8)
    torch.manual_seed(0)
    adversarial = build_attack("eot_pgd", defense, ATTACK_PARAMS["eot_pgd"])(x, y)
    assert (adversarial - x).abs().max().item() <= 0.15 + 1e-6
    assert adversarial.min() >= 0 and adversarial.max() <= 1
    assert not defense.classifier.training


def _conv_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 14 * 14, 2)).eval()


@pytest.mark.parametrize("max_batch", [4096, 6])
def test_batched_eot_gradient_on_deterministic_model_equals_single_gradient(max_batch):
    model = _conv_model()
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 1])
    attack = BatchedEOTPGD(model, eot_iter=5, max_batch=max_batch)
    single = BatchedEOTPGD(model, eot_iter=1).eot_gradient(x, y)
    xx = x.clone().requires_grad_(True)
    reference = torch.autograd.grad(F.cross_entropy(model(xx), y, reduction="sum"), xx)[0]
    torch.testing.assert_close(single, reference)
    torch.testing.assert_close(attack.eot_gradient(x, y), reference, rtol=1e-5, atol=1e-7)
    assert reference.abs().sum() > 0


@pytest.mark.parametrize("max_batch", [4096, 6])
def test_batched_eot_gradient_is_the_mean_of_per_draw_gradients(max_batch):
    """With RT1, k replicas in one batch draw the same masks as k sequential calls."""
    defense = DefendedModel(_conv_model(), MeanFill(), build_transform("rt1", seed=0, grid=4, mask_rate=0.25)).eval()
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 0])
    attack = BatchedEOTPGD(defense, eot_iter=4, max_batch=max_batch)
    defense.reseed(5)
    batched = attack.eot_gradient(x, y)
    defense.reseed(5)
    per_draw = []
    for _ in range(4):
        xx = x.clone().requires_grad_(True)
        per_draw.append(torch.autograd.grad(F.cross_entropy(defense(xx), y, reduction="sum"), xx)[0])
    sequential = torch.stack(per_draw).mean(dim=0)
    torch.testing.assert_close(batched, sequential, rtol=1e-4, atol=1e-8)
    # The draws differ, so the mean is not just one of them.
    assert not torch.allclose(per_draw[0], per_draw[1])
    assert not torch.allclose(batched, per_draw[0])


def test_batched_eot_pgd_targeted_mode_moves_towards_the_target(classifier):
    x, y = _separable(n=8)
    attack = BatchedEOTPGD(classifier, eps=0.15, alpha=0.05, steps=5, eot_iter=1, random_start=False)
    target = 1 - y
    attack.set_mode_targeted_by_function(lambda images, labels: target)
    adversarial = attack(x, y)
    assert (classifier(adversarial).argmax(1) == target).all()


def test_build_attack_names_unknown_parameters():
    model = _conv_model()
    with pytest.raises(ValueError, match="stepz"):
        build_attack("pgd_linf", model, {"eps": 0.1, "alpha": 0.01, "steps": 2, "stepz": 3})
    with pytest.raises(ValueError, match="alpha"):
        build_attack("fgsm", model, {"eps": 0.1, "alpha": 0.01})


def test_build_attack_names_missing_parameters():
    model = _conv_model()
    with pytest.raises(ValueError, match="missing parameters \\['alpha', 'steps'\\]"):
        build_attack("pgd_linf", model, {"eps": 0.1})
    with pytest.raises(ValueError, match="'eot'"):
        build_attack("eot_pgd", model, {"eps": 0.1, "alpha": 0.01, "steps": 1})
    with pytest.raises(KeyError, match="fgsm"):
        build_attack("cw", model, {})
    # Optional parameters may be left out or given.
    attack = build_attack("pgd_linf", model, {"eps": 0.1, "alpha": 0.01, "steps": 2, "random_start": False})
    assert attack.steps == 2 and attack.random_start is False


# --------------------------------------------------------------------------- evaluation


def _prepared(n_test=24):
    def split(n, seed):
        x, y = _separable(n=n, seed=seed)
        return (x * 255).round().to(torch.uint8), y

    tensors = {}
    for name, n, seed in [("train", 8, 10), ("val", 8, 11), ("test", n_test, 12)]:
        tensors[f"x_{name}"], tensors[f"y_{name}"] = split(n, seed)
    info = {"num_classes": 2, "mean": [0.5] * 3, "std": [0.25] * 3, "image_shape": [3, 16, 16]}
    return PreparedData(tensors=tensors, info=info)


EVAL_SPEC = {
    "n_samples": 10,
    "sample_seed": 3,
    "draws": 3,
    "batch_size": 4,
    "checks": {"gradient_samples": 8, "eps_zero_samples": 4},
}


def test_sample_indices_fixed_sorted_and_capped():
    a = sample_indices(50, 10, seed=1)
    assert torch.equal(a, sample_indices(50, 10, seed=1))
    assert not torch.equal(a, sample_indices(50, 10, seed=2))
    assert len(a) == 10 and len(set(a.tolist())) == 10
    assert torch.equal(a, a.sort().values) and a.max() < 50
    assert sorted(sample_indices(5, 10, seed=0).tolist()) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("randomized", [False, True], ids=["standard", "randomized"])
def test_evaluate_defense(classifier, randomized):
    data = _prepared()
    if randomized:
        defense = DefendedModel(classifier, MeanFill(), build_transform("rt2", seed=0, noise_std=0.05, grid=4)).eval()
        name = "ap"
    else:
        defense = DefendedModel(classifier).eval()
        name = "standard"
    results = {}
    for attack_name, method in [("fgsm", "fgsm"), ("eot", "eot_pgd")]:
        spec = {"method": method, **ATTACK_PARAMS[method]}
        results[attack_name] = evaluate_defense(defense, name, attack_name, spec, data, EVAL_SPEC, seed=0)

    for attack_name, r in results.items():
        assert r["defense"] == name and r["attack"] == attack_name
        assert r["n"] == 10 and len(r["sample_indices"]) == 10
        assert r["randomized"] is randomized
        assert r["draws"] == (3 if randomized else 1)
        for key in ("clean", "robust"):
            assert 0 <= r[key]["accuracy"] <= 1 and 0 <= r[key]["strict_accuracy"] <= r[key]["accuracy"]
            assert r[key]["draws"] == r["draws"] and r[key]["n"] == 10
        assert r["robust"]["accuracy"] <= r["clean"]["accuracy"]
        assert r["clean"]["accuracy"] >= 0.9 and r["robust"]["accuracy"] <= 0.5
        assert r["max_perturbation_linf"] <= 0.15 + 1e-6
        assert len(r["per_sample"]["robust_correct_fraction"]) == 10
        assert r["norm"] == "Linf" and r["eps"] == 0.15
    assert results["fgsm"]["sample_indices"] == results["eot"]["sample_indices"]
    assert results["fgsm"]["sample_indices"] == sample_indices(24, 10, 3).tolist()
    # EOT over a deterministic model is one gradient; over a randomized one it is kept.
    assert results["eot"]["eot"] == (2 if randomized else 1)
    assert not defense.classifier.training


def test_evaluate_defense_is_reproducible(classifier):
    data = _prepared()
    defense = DefendedModel(classifier, MeanFill(), build_transform("rt2", seed=0, noise_std=0.3, grid=4)).eval()
    spec = {"method": "pgd_linf", "eps": 0.08, "alpha": 0.03, "steps": 2}
    first = evaluate_defense(defense, "ap", "pgd", spec, data, EVAL_SPEC, seed=4)
    second = evaluate_defense(defense, "ap", "pgd", spec, data, EVAL_SPEC, seed=4)
    assert first["per_sample"] == second["per_sample"]
    assert first["clean"] == second["clean"] and first["robust"] == second["robust"]
