"""What a user's defense must do before any attack runs on it (``python -m atop check-defense``).

A custom defense (custom_defenses.py) is a module this project did not write, so the contract the
evaluation relies on is checked on a few test images first: logits of shape (N, classes), finite;
its input left as it was; input gradients that exist and are finite (every white-box attack needs
them); and its declared randomness. Declared deterministic, two draws of one image must agree (else
the evaluation would score it once and attack it without EOT: an overstated robustness). Declared
randomized but identical under every draw is allowed (EOT is only wasted) and said as a warning.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class DefenseCheckError(ValueError):
    """A custom defense breaks the contract the evaluation relies on; the message says how."""


def check_defense(defense: nn.Module, x: torch.Tensor, y: torch.Tensor, num_classes: int, seed: int) -> dict:
    """Check ``defense`` (randomized, reseed, forward on [0, 1] images) on ``x``; raise on a broken contract."""
    problems, warnings = [], []
    original = x.clone()
    defense.reseed(seed)
    with torch.no_grad():
        logits = defense(x)
    if not isinstance(logits, torch.Tensor):
        raise DefenseCheckError(f"the defense returned a {type(logits).__name__}, not a tensor of logits")
    if tuple(logits.shape) != (len(x), num_classes):
        raise DefenseCheckError(
            f"the defense returned shape {tuple(logits.shape)} for {len(x)} images; logits of shape "
            f"({len(x)}, {num_classes}) are needed (one score per class of the dataset)"
        )
    if not logits.is_floating_point():
        problems.append(f"its logits are {logits.dtype}, not floating point")
    elif not torch.isfinite(logits).all():
        problems.append(f"{int((~torch.isfinite(logits)).any(1).sum())} of {len(x)} images get non-finite logits")
    if not torch.equal(x, original):
        problems.append("it changed its input in place (an attack's adversarial images would be altered)")
        x = original.clone()

    defense.reseed(seed)
    with torch.no_grad():
        again = defense(x)
    defense.reseed(seed + 1)
    with torch.no_grad():
        other = defense(x)
    repeatable = bool(torch.equal(logits, again))
    varies = not torch.equal(logits, other) or not repeatable
    if not defense.randomized and varies:
        problems.append(
            "it is declared deterministic (randomized: false) but two passes of the same images differ: "
            "declare randomized: true, so that it is attacked with EOT and scored over draws"
        )
    if defense.randomized and not varies:
        warnings.append("declared randomized, but every draw gave the same logits: EOT and draws are spent for nothing")
    if defense.randomized and varies and not repeatable:
        warnings.append(
            "its draws are not repeatable from a seed (randomness outside torch's RNG, e.g. numpy or its own "
            "generator): results will not be reproduced bit for bit"
        )

    x_grad = x.clone().requires_grad_(True)
    defense.reseed(seed)
    with torch.enable_grad():
        loss = F.cross_entropy(defense(x_grad), y)
        if not loss.requires_grad:
            problems.append("its output has no gradient with respect to the input: white-box attacks need one")
            gradient = None
        else:
            (gradient,) = torch.autograd.grad(loss, x_grad, allow_unused=True)
    nonzero = None
    if gradient is None and loss.requires_grad:
        problems.append("its output does not depend on the input through autograd: white-box attacks need a gradient")
    elif gradient is not None:
        if not torch.isfinite(gradient).all():
            problems.append("its input gradient has non-finite values")
        nonzero = float((gradient.flatten(1).abs().sum(1) > 0).float().mean())
        if nonzero == 0:
            warnings.append("its input gradient is zero on every image: gradient attacks will fail (masked gradients)")
    if problems:
        raise DefenseCheckError("; ".join(problems))
    accuracy = float((logits.argmax(1) == y).float().mean())
    if accuracy <= 1.0 / num_classes:
        warnings.append(f"clean accuracy {accuracy:.2f} on the check images is at chance level")
    return {
        "images": len(x),
        "declared_randomized": bool(defense.randomized),
        "draws_differ": varies,
        "repeatable": repeatable,
        "logits_shape": list(logits.shape),
        "clean_accuracy": accuracy,
        "gradient_nonzero_fraction": nonzero,
        "warnings": warnings,
    }
