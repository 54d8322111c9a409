"""Gradient-obfuscation checks (Athalye et al. 2018; Carlini et al. 2019 checklist).

Each check returns ``{"passed": bool, "detail": str, ...}``. A failed check
never stops the workflow - the numbers are still reported - but it is loud in
the result JSON, the log and the report, because a defense that fails one is
probably masking gradients rather than being robust. Two accuracies on the same
images are compared image by image: "beyond noise" means an exact one-sided
sign test on the per-image fractions of draws classified right (McNemar's test
when there is one draw) rejects at ``ALPHA``. A check that cannot be computed
fails and says why: a check not run is not a check passed.

``ALPHA`` is 1 %, not 5 %: a run makes dozens of these checks, several near the
null (eps = 0 sweep points, weak black-box attacks), and each failure is loud. On a
randomized toy defense (8 draws, 200 images, identical images re-scored under new
draws) the one-sided sign test rejected in 3 % of 200 seeds at 5 % and in none at 1 %.
"""

from __future__ import annotations

import itertools
import math
from typing import TYPE_CHECKING

from .stats import aligned, sign_test, upper_bound_below

if TYPE_CHECKING:  # torch only where a check computes on tensors: the `checks` job reads JSON alone
    import torch
    from torch import nn

ALPHA = 0.01  # one-sided level of every paired test here
NEAR_ZERO_LEVEL = 0.05  # large eps: the one-sided 95 % upper bound on accuracy must lie below the ceiling
BUDGET_TOLERANCE = 1e-6  # float32 rounding of x + delta, clamped to [0, 1]
ITERATIVE_LINF = ("pgd_linf", "eot_pgd")


def robust_not_above_clean(clean_fraction: torch.Tensor, robust_fraction: torch.Tensor) -> dict:
    """Per-image fractions of draws right, clean vs attacked: the attack must not raise accuracy beyond noise."""
    test = sign_test(robust_fraction.tolist(), clean_fraction.tolist(), alternative="greater")
    passed = test.p_value >= ALPHA
    return {
        "passed": passed,
        "test": "sign test (robust > clean), per image",
        "p_value": test.p_value,
        "detail": f"robust {float(robust_fraction.mean()):.4f} vs clean {float(clean_fraction.mean()):.4f}: "
        f"{test.text()}; rule: fails when p < {ALPHA:g}"
        + ("" if passed else ": the attack RAISED accuracy beyond noise"),
    }


def input_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict:
    """Every sample's loss gradient w.r.t. its input must be finite and non-zero."""
    import torch
    import torch.nn.functional as F

    device = next(model.parameters()).device
    x = x.to(device).clone().requires_grad_(True)
    loss = F.cross_entropy(model(x), y.to(device))
    (grad,) = torch.autograd.grad(loss, x)
    finite = bool(torch.isfinite(grad).all())
    per_sample = grad.flatten(1).abs().sum(dim=1)
    zero = int((per_sample == 0).sum())
    nonzero = 1 - zero / len(per_sample)
    passed = finite and zero == 0
    return {
        "passed": passed,
        "finite": finite,
        "nonzero_fraction": nonzero,
        "zero_gradient_samples": zero,
        "mean_abs": float(grad.abs().mean()) if finite else None,
        "detail": f"finite={finite}, zero gradient for {zero} of {len(per_sample)} samples (rule: all finite, none zero)"
        + ("" if passed else ": gradients are broken or vanishing"),
    }


def _moved(max_perturbation: float, tolerance: float = 1e-7) -> bool:
    return not math.isfinite(max_perturbation) or max_perturbation > tolerance


def zero_budget(clean_correct: torch.Tensor, at_zero_correct: torch.Tensor, max_perturbation: float) -> dict:
    """An eps = 0 attack must not move the images, and the same draws must then classify them identically.

    ``clean_correct`` and ``at_zero_correct`` are (draws, n) right/wrong outcomes scored under the same
    random-transform seed and batch layout, so any difference is the attack's doing, not noise.
    """
    moved = _moved(max_perturbation)
    differing = int((clean_correct != at_zero_correct).sum())
    passed = not moved and differing == 0
    n = at_zero_correct.shape[1]
    return {
        "passed": passed,
        "n": n,
        "accuracy_at_eps0": float(at_zero_correct.float().mean()),
        "clean_accuracy": float(clean_correct.float().mean()),
        "differing_predictions": differing,
        "max_perturbation": max_perturbation,
        "detail": f"eps=0: accuracy {float(at_zero_correct.float().mean()):.4f} vs clean "
        f"{float(clean_correct.float().mean()):.4f} under the same draws, {differing} of {at_zero_correct.numel()} "
        f"(draw, image) outcomes differ, max perturbation {max_perturbation:.2e} "
        "(rule: finite, <= 1e-7, identical outcomes)",
    }


PERTURBATION_NORMS = {
    "Linf": lambda delta: delta.flatten(1).abs().amax(dim=1),
    "L2": lambda delta: delta.flatten(1).norm(dim=1),
}


def within_budget(delta: torch.Tensor, norm: str, eps: float) -> dict:
    """Every adversarial image must lie within ``eps`` of its original in the attack's own norm."""
    import torch

    if norm not in PERTURBATION_NORMS:
        raise ValueError(f"no perturbation budget check for norm {norm!r}; known: {', '.join(PERTURBATION_NORMS)}")
    sizes = PERTURBATION_NORMS[norm](delta)
    finite = bool(torch.isfinite(sizes).all())
    largest = float(sizes.max()) if len(sizes) else 0.0
    over = int((~(sizes <= eps + BUDGET_TOLERANCE)).sum())  # NaN counts as over
    passed = finite and over == 0
    return {
        "passed": passed,
        "norm": norm,
        "eps": eps,
        "max_perturbation": largest,
        "over_budget": over,
        "detail": f"{norm} perturbation at most {largest:.6g} vs eps {eps:.6g} (+{BUDGET_TOLERANCE:g}); "
        f"{over} of {len(sizes)} images over budget" + ("" if passed else ": the attack left its threat model"),
    }


def _per_image(result: dict) -> tuple[list[int], list[float]] | None:
    indices = result.get("sample_indices")
    fractions = (result.get("per_sample") or {}).get("robust_correct_fraction")
    if not indices or not fractions or len(indices) != len(fractions):
        return None
    return indices, fractions


def weaker_not_stronger(weaker: dict, stronger: dict, claim: str) -> dict:
    """The weaker attack's robust accuracy must not be below the stronger one's beyond noise (paired, per image)."""
    base = {"claim": claim, "weaker": weaker["attack"], "stronger": stronger["attack"]}
    a, b = _per_image(weaker), _per_image(stronger)
    common, weak, strong = aligned(*a, *b) if a and b else ([], [], [])
    if not common:
        return {
            **base,
            "passed": False,
            "detail": f"{weaker['attack']} vs {stronger['attack']}: cannot compare, no per-image outcomes on common "
            "images: check not run",
        }
    test = sign_test(weak, strong, alternative="less")
    passed = test.p_value >= ALPHA
    return {
        **base,
        "passed": passed,
        "test": "sign test (weaker < stronger), per image",
        "n_common": len(common),
        "p_value": test.p_value,
        "detail": f"{weaker['attack']} {sum(weak) / len(weak):.4f} vs {stronger['attack']} "
        f"{sum(strong) / len(strong):.4f} on {len(common)} common images: {test.text()}; rule: fails when p < {ALPHA:g}"
        + ("" if passed else f": {claim} FAILS"),
    }


def _black_box(result: dict) -> bool:
    return result.get("white_box") is False or result["method"] == "square"


def cross_attack_checks(results: list[dict]) -> list[dict]:
    """Per defense: FGSM never beats PGD; white-box PGD beats black-box Square.

    A randomized defense without a black-box result fails the second check: random
    transforms are exactly where gradients mislead, so the comparison is required.
    """
    checks = []
    by_defense: dict[str, list[dict]] = {}
    for result in results:
        if not result.get("upper_bound"):
            by_defense.setdefault(result["defense"], []).append(result)
    for defense, rows in sorted(by_defense.items()):
        linf = [r for r in rows if r.get("norm") == "Linf"]
        iterative = [r for r in linf if r["method"] in ITERATIVE_LINF]
        for fgsm in (r for r in linf if r["method"] == "fgsm"):
            for pgd in iterative:
                if pgd["eps"] == fgsm["eps"]:
                    checks.append({"defense": defense, **weaker_not_stronger(fgsm, pgd, "FGSM never beats PGD")})
        black_box = [r for r in linf if _black_box(r)]
        claim = "white-box PGD beats black-box Square"
        for black in black_box:
            for pgd in iterative:
                if pgd["eps"] == black["eps"]:
                    checks.append({"defense": defense, **weaker_not_stronger(black, pgd, claim)})
        if not black_box and any(r.get("randomized") for r in rows):
            checks.append(
                {
                    "defense": defense,
                    "claim": claim,
                    "passed": False,
                    "detail": "not run: no black-box attack on this randomized defense",
                }
            )
    return checks


def _successes(result: dict) -> tuple[int, int]:
    """Images right, rounded up (summed per-image draw fractions), and images scored."""
    per_image = _per_image(result)
    if per_image:
        return math.ceil(sum(per_image[1]) - 1e-9), len(per_image[1])
    n = int(result["robust"]["n"])
    return math.ceil(result["robust"]["accuracy"] * n - 1e-9), n


def reaches_zero(last: dict, ceiling: float) -> dict:
    """At the sweep's largest eps the accuracy must be demonstrably below ``ceiling`` (one-sided exact test)."""
    k, n = _successes(last)
    passed, p = upper_bound_below(k, n, ceiling, NEAR_ZERO_LEVEL)
    rule = f"rule: exact one-sided binomial test of accuracy >= {ceiling:g} rejected at {NEAR_ZERO_LEVEL:g}"
    return {
        "claim": "robust accuracy reaches about 0 at a large eps",
        "passed": passed,
        "p_value": p,
        "detail": f"eps={last['sweep']['value']:.4g}: robust {last['robust']['accuracy']:.4f} ({k} of {n} images "
        f"right, rounded up), p = {p:.3g}; {rule}"
        + ("" if passed else ": not demonstrably near 0, the attack cannot break the model even when it may"),
    }


def sweep_checks(points: list[dict], large_eps_ceiling: float = 0.1) -> list[dict]:
    """Robust accuracy falls with eps and reaches about 0; more steps or EOT never help the defense."""
    checks = []
    series: dict[tuple[str, str], list[dict]] = {}
    for point in points:
        series.setdefault((point["defense"], point["sweep"]["name"]), []).append(point)
    for (defense, name), rows in sorted(series.items()):
        rows = sorted(rows, key=lambda r: r["sweep"]["value"])
        param = rows[0]["sweep"]["param"]
        for before, after in itertools.pairwise(rows):
            claim = f"robust accuracy does not rise with {param}"
            check = weaker_not_stronger(before, after, claim)
            check["detail"] = (
                f"{param}={before['sweep']['value']:.4g} -> {param}={after['sweep']['value']:.4g}: " + check["detail"]
            )
            checks.append({"defense": defense, "sweep": name, **check})
        if param == "eps":
            checks.append({"defense": defense, "sweep": name, **reaches_zero(rows[-1], large_eps_ceiling)})
    return checks
