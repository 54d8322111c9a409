"""One attack on one defense -> one JSON with everything needed to re-run it."""

from __future__ import annotations

import logging
import time

import torch
from tqdm import tqdm

from .attacks import ATTACKS, DEFAULT_EOT, build_attack, effective_parameters, threat_norm
from .checks import input_gradients, robust_not_above_clean, within_budget, zero_budget
from .data import PreparedData
from .defense import DEFENSES, DefendedModel
from .defense_kinds import split_defense
from .finetune_attacks import FINETUNE_ATTACKS
from .metrics import correct_per_draw, summarize

log = logging.getLogger("atop.evaluate")


def sample_indices(n_test: int, n_samples: int, seed: int) -> torch.Tensor:
    """The fixed, seeded subset of test images every defense and attack is scored on."""
    order = torch.randperm(n_test, generator=torch.Generator().manual_seed(seed))
    return order[: min(n_samples, n_test)].sort().values


# Images per attack batch when the config says "auto": GPUs want large batches. On a
# CPU, throughput peaks at 32-128 images per pass and falls ~40 % by 512, when the
# activations leave the cache (benchmarks/eot.py prints the curve).
AUTO_BATCH_SIZE = {"cuda": 512, "cpu": 128}


def evaluation_batch_size(requested: int | str, device: torch.device) -> int:
    if requested == "auto":
        return AUTO_BATCH_SIZE.get(device.type, 128)
    return int(requested)


def run_attack(attack, x: torch.Tensor, y: torch.Tensor, batch_size: int, label: str) -> torch.Tensor:
    """The adversarial images; ``attack.fooled`` becomes every batch's record of the images its queries
    misclassified, for attacks that keep one (attacks/eot.py; the while-optimizing protocol), else None."""
    adversarial, fooled = [], []
    with tqdm(total=len(y), desc=label, unit="img", mininterval=5, dynamic_ncols=False) as bar:
        for start in range(0, len(y), batch_size):
            adversarial.append(attack(x[start : start + batch_size], y[start : start + batch_size]).cpu())
            recorded = getattr(attack, "fooled", None)
            fooled.append(None if recorded is None else recorded.cpu())
            bar.update(len(adversarial[-1]))
    if hasattr(attack, "fooled"):
        attack.fooled = None if any(f is None for f in fooled) else torch.cat(fooled)
    return torch.cat(adversarial)


def evaluate_defense(
    defense: DefendedModel,
    defense_name: str,
    attack_name: str,
    attack_spec: dict,
    data: PreparedData,
    spec: dict,
    seed: int,
    finetune_attack: str | None = None,
) -> dict:
    """Clean and robust accuracy of ``defense`` on the fixed test subset under one attack."""
    device = next(defense.parameters()).device
    batch = evaluation_batch_size(spec["batch_size"], device)
    idx = sample_indices(len(data.labels("test")), spec["n_samples"], spec["sample_seed"])
    x, y = data.images("test")[idx], data.labels("test")[idx]
    draws = spec["draws"] if defense.randomized else 1
    method = attack_spec["method"]
    entry = ATTACKS[method]
    configured = {k: v for k, v in attack_spec.items() if k != "method"}
    # What the attack runs with, defaults included and eot "auto" resolved: recorded as is.
    params = effective_parameters(method, configured, randomized=defense.randomized, eot=spec.get("eot", DEFAULT_EOT))
    context = {"num_classes": data.num_classes, "seed": seed, "draws": draws}
    attack = build_attack(method, defense, params, **context)
    if method == "aa_standard" and defense.randomized:
        log.warning("aa_standard on the randomized defense %s: the reference advises aa_rand (EOT)", defense_name)

    began = time.perf_counter()
    defense.reseed(seed)
    clean = correct_per_draw(defense, x, y, draws, batch)
    torch.manual_seed(seed)
    defense.reseed(seed + 1)
    attack_began = time.perf_counter()
    adversarial = run_attack(attack, x, y, batch, f"{defense_name}/{attack_name}")
    # only an attack whose queries are the defense's own says something about it (not a transfer attack)
    fooled_while_optimizing = getattr(attack, "fooled", None) if entry.facts.records_queries else None
    attack_seconds = time.perf_counter() - attack_began
    defense.reseed(seed + 2)
    robust = correct_per_draw(defense, adversarial, y, draws, batch)
    clean_summary, robust_summary = summarize(clean), summarize(robust)

    n_check = min(spec["checks"]["gradient_samples"], len(y))
    defense.reseed(seed + 3)
    checks = {
        "robust_not_above_clean": robust_not_above_clean(clean.float().mean(dim=0), robust.float().mean(dim=0)),
        "input_gradients": input_gradients(defense, x[:n_check], y[:n_check]),
    }
    n_zero = min(spec["checks"]["eps_zero_samples"], len(y))
    if "eps" in params and n_zero > 0:
        zero_attack = build_attack(method, defense, {**params, "eps": 0.0}, **context)
        torch.manual_seed(seed)
        defense.reseed(seed + 4)
        at_zero_images = run_attack(zero_attack, x[:n_zero], y[:n_zero], batch, "eps=0 check")
        # scored exactly like clean (same seed, same batches), so identical images get identical draws
        defense.reseed(seed)
        at_zero = correct_per_draw(defense, torch.cat([at_zero_images, x[n_zero:]]), y, draws, batch)
        moved = (at_zero_images - x[:n_zero]).abs().max().item()
        checks["zero_budget"] = zero_budget(clean[:, :n_zero], at_zero[:, :n_zero], moved)
    if "eps" in params and "bound" not in params:  # flow attacks (StAdv) have a bound, not an eps-ball
        checks["within_budget"] = within_budget(adversarial - x, threat_norm(method, params), float(params["eps"]))
    for name, check in checks.items():
        if not check["passed"]:
            log.warning("OBFUSCATION CHECK FAILED (%s / %s) %s: %s", defense_name, attack_name, name, check["detail"])
    wall = time.perf_counter() - began

    delta = (adversarial - x).flatten(1)
    norm = threat_norm(method, params)
    seen = None
    if finetune_attack is not None:
        seen = norm == FINETUNE_ATTACKS[finetune_attack].norm
    result = {
        "defense": defense_name,
        "defense_description": DEFENSES[split_defense(defense_name)[0]].description,
        "randomized": defense.randomized,
        "attack": attack_name,
        "method": method,
        "params": params,
        "norm": norm,
        "eps": params.get("eps", params.get("bound")),
        # Square's iterations are its queries; FGSM is one step.
        "steps": params.get("steps", params.get("n_queries", 1)),
        "eot": params.get("eot", 1),  # gradient samples per step, as run (1 = not EOT-averaged)
        "white_box": entry.white_box,
        "upper_bound": entry.upper_bound,
        "gradient": entry.gradient,
        "finetune_attack": finetune_attack,
        "seen": seen,
        "seed": seed,
        "sample_seed": spec["sample_seed"],
        "sample_indices": idx.tolist(),
        "n": len(y),
        "draws": draws,
        "clean": clean_summary,
        "robust": robust_summary,
        "per_sample": {
            "clean_correct_fraction": clean.float().mean(dim=0).tolist(),
            "robust_correct_fraction": robust.float().mean(dim=0).tolist(),
        },
        # protocols.py's while-optimizing protocol: which images a query of the attack misclassified
        # (absent for attacks that keep no record)
        **({} if fooled_while_optimizing is None else {"fooled_while_optimizing": fooled_while_optimizing.tolist()}),
        "max_perturbation_linf": delta.abs().max(dim=1).values.max().item(),
        "max_perturbation_l2": delta.norm(dim=1).max().item(),
        "checks": checks,
        "checks_passed": all(check["passed"] for check in checks.values()),
        "wall_seconds": wall,
        "attack_seconds": attack_seconds,
        "images_per_second": len(y) / attack_seconds if attack_seconds > 0 else None,
        "batch_size": batch,
        "device": str(device),
    }
    log.info(
        "%s / %s: clean %.4f robust %.4f (n=%d, draws=%d, %.1f s)%s",
        defense_name,
        attack_name,
        clean_summary["accuracy"],
        robust_summary["accuracy"],
        len(y),
        draws,
        wall,
        f" [UPPER BOUND: {entry.gradient} gradient]" if entry.upper_bound else "",
    )
    return result
