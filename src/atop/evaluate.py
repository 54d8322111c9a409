"""One attack on one defense -> one JSON with everything needed to re-run it."""

from __future__ import annotations

import logging
import time

import torch
from tqdm import tqdm

from .attacks import ATTACKS, build_attack
from .data import PreparedData
from .defense import DEFENSES, DefendedModel
from .metrics import correct_per_draw, summarize

log = logging.getLogger("atop.evaluate")


def sample_indices(n_test: int, n_samples: int, seed: int) -> torch.Tensor:
    """The fixed, seeded subset of test images every defense and attack is scored on."""
    order = torch.randperm(n_test, generator=torch.Generator().manual_seed(seed))
    return order[: min(n_samples, n_test)].sort().values


def run_attack(attack, x: torch.Tensor, y: torch.Tensor, batch_size: int, label: str) -> torch.Tensor:
    adversarial = []
    with tqdm(total=len(y), desc=label, unit="img", mininterval=5, dynamic_ncols=False) as bar:
        for start in range(0, len(y), batch_size):
            adversarial.append(attack(x[start : start + batch_size], y[start : start + batch_size]).cpu())
            bar.update(len(adversarial[-1]))
    return torch.cat(adversarial)


def evaluate_defense(
    defense: DefendedModel,
    defense_name: str,
    attack_name: str,
    attack_spec: dict,
    data: PreparedData,
    spec: dict,
    seed: int,
) -> dict:
    """Clean and robust accuracy of ``defense`` on the fixed test subset under one attack."""
    device = next(defense.parameters()).device
    idx = sample_indices(len(data.labels("test")), spec["n_samples"], spec["sample_seed"])
    x, y = data.images("test")[idx], data.labels("test")[idx]
    draws = spec["draws"] if defense.randomized else 1
    params = {k: v for k, v in attack_spec.items() if k != "method"}
    if "eot" in params and not defense.randomized:
        params["eot"] = 1  # EOT over a deterministic model repeats the same gradient
    attack = build_attack(attack_spec["method"], defense, params)

    began = time.perf_counter()
    defense.reseed(seed)
    clean = correct_per_draw(defense, x, y, draws, spec["batch_size"])
    torch.manual_seed(seed)
    defense.reseed(seed + 1)
    attack_began = time.perf_counter()
    adversarial = run_attack(attack, x, y, spec["batch_size"], f"{defense_name}/{attack_name}")
    attack_seconds = time.perf_counter() - attack_began
    defense.reseed(seed + 2)
    robust = correct_per_draw(defense, adversarial, y, draws, spec["batch_size"])
    wall = time.perf_counter() - began

    linf = (adversarial - x).abs().flatten(1).max(dim=1).values.max().item()
    result = {
        "defense": defense_name,
        "defense_description": DEFENSES[defense_name].description,
        "randomized": defense.randomized,
        "attack": attack_name,
        "method": attack_spec["method"],
        "params": params,
        "norm": ATTACKS[attack_spec["method"]].norm,
        "eps": params.get("eps"),
        "steps": params.get("steps", 1),
        "eot": params.get("eot", 1),
        "seed": seed,
        "sample_seed": spec["sample_seed"],
        "sample_indices": idx.tolist(),
        "n": len(y),
        "draws": draws,
        "clean": summarize(clean),
        "robust": summarize(robust),
        "per_sample": {
            "clean_correct_fraction": clean.float().mean(dim=0).tolist(),
            "robust_correct_fraction": robust.float().mean(dim=0).tolist(),
        },
        "max_perturbation_linf": linf,
        "wall_seconds": wall,
        "attack_seconds": attack_seconds,
        "images_per_second": len(y) / attack_seconds if attack_seconds > 0 else None,
        "device": str(device),
    }
    log.info(
        "%s / %s: clean %.4f robust %.4f (n=%d, draws=%d, %.1f s)",
        defense_name, attack_name, result["clean"]["accuracy"], result["robust"]["accuracy"], len(y), draws, wall,
    )
    return result
