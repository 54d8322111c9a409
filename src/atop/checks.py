"""Gradient-obfuscation checks (Athalye et al. 2018; Carlini et al. 2019 checklist).

Each check returns ``{"passed": bool, "detail": str, ...}``. A failed check
never stops the workflow - the numbers are still reported - but it is loud in
the result JSON, the log and the report, because a defense that fails one is
probably masking gradients rather than being robust. "Beyond noise" means the
95 % Wilson intervals of the two accuracies do not overlap.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn


def _separated(low_of_higher: float, high_of_lower: float) -> bool:
    return low_of_higher > high_of_lower


def robust_not_above_clean(clean: dict, robust: dict) -> dict:
    passed = not _separated(robust["ci95"][0], clean["ci95"][1])
    return {
        "passed": passed,
        "detail": f"robust {robust['accuracy']:.4f} vs clean {clean['accuracy']:.4f}"
        + ("" if passed else ": the attack RAISED accuracy beyond noise"),
    }


def input_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict:
    """Gradients of the loss w.r.t. the input must be finite and mostly non-zero."""
    device = next(model.parameters()).device
    x = x.to(device).clone().requires_grad_(True)
    loss = F.cross_entropy(model(x), y.to(device))
    (grad,) = torch.autograd.grad(loss, x)
    finite = bool(torch.isfinite(grad).all())
    per_sample = grad.flatten(1).abs().sum(dim=1)
    nonzero = float((per_sample > 0).float().mean())
    passed = finite and nonzero >= 0.5
    return {
        "passed": passed,
        "finite": finite,
        "nonzero_fraction": nonzero,
        "mean_abs": float(grad.abs().mean()) if finite else None,
        "detail": f"finite={finite}, non-zero for {100 * nonzero:.0f} % of samples"
        + ("" if passed else ": gradients are broken or vanishing"),
    }


def zero_budget(clean: dict, at_zero: dict, max_perturbation: float) -> dict:
    """An eps = 0 attack must not move the images nor change accuracy beyond noise."""
    moved = max_perturbation > 1e-7
    changed = _separated(clean["ci95"][0], at_zero["ci95"][1]) or _separated(at_zero["ci95"][0], clean["ci95"][1])
    passed = not moved and not changed
    return {
        "passed": passed,
        "n": at_zero["n"],
        "accuracy_at_eps0": at_zero["accuracy"],
        "clean_accuracy": clean["accuracy"],
        "max_perturbation": max_perturbation,
        "detail": f"eps=0: accuracy {at_zero['accuracy']:.4f} vs clean {clean['accuracy']:.4f}, "
        f"max perturbation {max_perturbation:.2e}",
    }


def weaker_not_stronger(weaker: dict, stronger: dict, claim: str) -> dict:
    """The weaker attack's robust accuracy must not be below the stronger one's beyond noise."""
    w, s = weaker["robust"], stronger["robust"]
    passed = not _separated(s["ci95"][0], w["ci95"][1])
    return {
        "passed": passed,
        "claim": claim,
        "weaker": weaker["attack"],
        "stronger": stronger["attack"],
        "detail": f"{weaker['attack']} {w['accuracy']:.4f} vs {stronger['attack']} {s['accuracy']:.4f}"
        + ("" if passed else f": {claim} FAILS"),
    }


def cross_attack_checks(results: list[dict]) -> list[dict]:
    """Per defense: FGSM never beats PGD; white-box PGD beats black-box Square."""
    checks = []
    by_defense: dict[str, list[dict]] = {}
    for result in results:
        if not result.get("upper_bound"):
            by_defense.setdefault(result["defense"], []).append(result)
    for defense, rows in sorted(by_defense.items()):
        linf = [r for r in rows if r.get("norm") == "Linf"]
        iterative = [r for r in linf if r["method"] in ("pgd_linf", "eot_pgd")]
        for fgsm in (r for r in linf if r["method"] == "fgsm"):
            for pgd in iterative:
                if pgd["eps"] == fgsm["eps"]:
                    checks.append({"defense": defense, **weaker_not_stronger(fgsm, pgd, "FGSM never beats PGD")})
        for black in (r for r in linf if r["method"] == "square"):
            for pgd in iterative:
                if pgd["eps"] == black["eps"]:
                    checks.append(
                        {"defense": defense, **weaker_not_stronger(black, pgd, "white-box PGD beats black-box Square")}
                    )
    return checks


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
                f"{param}={before['sweep']['value']:.4g}: {before['robust']['accuracy']:.4f} -> "
                f"{param}={after['sweep']['value']:.4g}: {after['robust']['accuracy']:.4f}"
                + ("" if check["passed"] else f": {claim} FAILS")
            )
            checks.append({"defense": defense, "sweep": name, **check})
        if param == "eps":
            last = rows[-1]
            passed = last["robust"]["ci95"][0] <= large_eps_ceiling
            checks.append(
                {
                    "defense": defense,
                    "sweep": name,
                    "claim": "robust accuracy reaches about 0 at a large eps",
                    "passed": passed,
                    "detail": f"eps={last['sweep']['value']:.4g}: robust {last['robust']['accuracy']:.4f}"
                    + ("" if passed else " stays well above 0: the attack cannot break the model even when it may"),
                }
            )
    return checks
