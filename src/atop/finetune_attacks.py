"""How fine-tuning makes its adversarial examples x' (a registry).

Kept apart from the training code so that the evaluation, which labels its
attacks "seen" or "unseen" by the fine-tuning attack's norm, does not depend
on training modules.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .defense import DefendedModel
from .registry import Registry
from .torchattacks_lean import Attack, torchattacks

FINETUNE_ATTACKS: Registry = Registry("fine-tuning attack")


@dataclass(frozen=True)
class FinetuneAttack:
    build: Callable[[nn.Module, DefendedModel, dict], Attack]
    norm: str  # threat model; evaluation attacks of the same norm count as "seen"


def finetune_attack(name: str, norm: str):
    def add(build):
        FINETUNE_ATTACKS.register(name)(FinetuneAttack(build, norm))
        return build

    return add


@finetune_attack("fgsm_classifier", norm="Linf")
def _fgsm_on_classifier(classifier: nn.Module, defense: DefendedModel, spec: dict) -> Attack:
    """The paper's recipe: one FGSM step on the classifier alone (cheap)."""
    return torchattacks.FGSM(classifier, eps=spec["eps"])


@finetune_attack("pgd_defense", norm="Linf")
def _pgd_on_defense(classifier: nn.Module, defense: DefendedModel, spec: dict) -> Attack:
    """Stronger and slower: PGD through RT + purifier + classifier."""
    return torchattacks.PGD(defense, eps=spec["eps"], alpha=spec["alpha"], steps=spec["steps"], random_start=True)


class CheckedFGSM(Attack):
    """Kim, Lee & Lee's fix for catastrophic overfitting (AAAI 2021): one signed-gradient step, checked
    at ``check_points`` points x + (k/c) eps sign(g), k = 1..c; each image gets the smallest that the
    model misclassifies, or the full step if none does (no random start, as in their method)."""

    def __init__(self, model: nn.Module, eps: float, check_points: int) -> None:
        super().__init__("CheckedFGSM", model)
        if not isinstance(check_points, int) or check_points < 1:
            raise ValueError(f"check_points = {check_points!r} must be a positive integer")
        self.eps, self.check_points = eps, check_points
        self.supported_mode = ["default"]

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        images = images.clone().detach().to(self.device).requires_grad_(True)
        labels = labels.clone().detach().to(self.device)
        (grad,) = torch.autograd.grad(F.cross_entropy(self.get_logits(images), labels), images)
        images, step = images.detach(), self.eps * grad.sign()
        chosen = (images + step).clamp(0, 1)
        found = torch.zeros(len(labels), dtype=torch.bool, device=labels.device)
        with torch.no_grad():
            for k in range(1, self.check_points):  # the c-th point is the full step, already the default
                candidate = (images + (k / self.check_points) * step).clamp(0, 1)
                first = (self.get_logits(candidate).argmax(1) != labels) & ~found
                chosen[first] = candidate[first]
                found |= first
        return chosen


@finetune_attack("fgsm_checked", norm="Linf")
def _checked_fgsm_on_classifier(classifier: nn.Module, defense: DefendedModel, spec: dict) -> Attack:
    """The paper's FGSM on the classifier, with Kim et al.'s intermediate-point check (``check_points``)."""
    return CheckedFGSM(classifier, eps=spec["eps"], check_points=spec.get("check_points", 3))
