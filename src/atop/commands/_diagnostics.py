"""What the diagnostics commands share: the defense, the attack and the test images they measure."""

from __future__ import annotations

import time

from ..config import resolve_numbers


def diagnostic_defense(spec: dict, args, device):
    """The defense as the evaluation builds it (no fast path: diagnostics measure fp32 gradients)."""
    from ._common import defense_from_args

    defense, built_from = defense_from_args(args, spec["seed"])
    return defense.to(device), built_from


def diagnostic_attack(spec: dict, defense, num_classes: int):
    """The evaluation attack diagnostics.attack names, at its budget (EOT 1 on a deterministic defense)."""
    from ..attacks import build_attack

    params = {k: v for k, v in resolve_numbers(spec["attack"]).items() if k not in ("method", "defenses")}
    if "eot" in params and not defense.randomized:
        params["eot"] = 1
    draws = spec["evaluation"]["draws"] if defense.randomized else 1
    context = {"num_classes": num_classes, "seed": spec["seed"], "draws": draws}
    return build_attack(spec["attack"]["method"], defense, params, **context), draws


def evaluation_subset(data, spec: dict, n_images: int):
    """The first ``n_images`` of the evaluation's fixed test subset (the same seeded order)."""
    from ..evaluate import sample_indices

    n = min(n_images, spec["evaluation"]["n_samples"])
    idx = sample_indices(len(data.labels("test")), n, spec["evaluation"]["sample_seed"])
    return data.images("test")[idx], data.labels("test")[idx], idx


def write_diagnostic(out, result: dict, name: str, defense, began: float, built_from: dict, **record) -> dict:
    """Publish one diagnostic's result with what every diagnostic records beside it: the defense,
    whether it is randomized, what the command adds (its images, its attack), the seconds since
    ``began`` and the checkpoints the defense was built from."""
    from ..io import write_json

    record = {"defense": name, "randomized": defense.randomized, **record}
    result = result | record | {"seconds": time.perf_counter() - began, **built_from}
    write_json(out, result)
    return result
