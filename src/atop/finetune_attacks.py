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
    """Kim, Lee & Lee's fix for catastrophic overfitting (AAAI 2021), as their reference code does it
    (Harry24k/catastrophic-overfitting, ``co_adv_trainer.py``), through the model being trained.

    A random start x0 = clip(x + U(-eps, eps), 0, 1); one step of ``alpha`` along the sign of the loss
    gradient at x0, projected onto the eps-ball and [0, 1], gives x_f and the perturbation d = x_f - x.
    An image the model already misclassifies at x0 trains on the clean image x; the others on the
    first check point x + (k / c) d, k = 1..c-1, the model misclassifies, or on x_f if none is. The
    check points follow the model as it trains, which is what removes the distorted boundary behind
    catastrophic overfitting.
    """

    def __init__(self, model: nn.Module, eps: float, alpha: float, check_points: int) -> None:
        super().__init__("CheckedFGSM", model)
        if not isinstance(check_points, int) or check_points < 1:
            raise ValueError(f"check_points = {check_points!r} must be a positive integer")
        if not alpha > 0:
            raise ValueError(f"alpha = {alpha!r} must be positive")
        self.eps, self.alpha, self.check_points = eps, alpha, check_points
        self.supported_mode = ["default"]

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        images = images.clone().detach().to(self.device)
        labels = labels.clone().detach().to(self.device)
        start = (images + torch.empty_like(images).uniform_(-self.eps, self.eps)).clamp(0, 1).requires_grad_(True)
        logits = self.get_logits(start)
        (grad,) = torch.autograd.grad(F.cross_entropy(logits, labels), start)
        step = (start.detach() + self.alpha * grad.sign() - images).clamp(-self.eps, self.eps)
        full = (images + step).clamp(0, 1)
        perturbation = full - images
        found = logits.detach().argmax(1) != labels  # wrong at the random start: train on the clean image
        chosen = torch.where(found[:, None, None, None], images, full)
        with torch.no_grad():
            for k in range(1, self.check_points):  # the c-th point is x_f, already the default
                candidate = images + (k / self.check_points) * perturbation
                first = (self.get_logits(candidate).argmax(1) != labels) & ~found
                chosen[first] = candidate[first]
                found |= first
        return chosen


@finetune_attack("fgsm_checked", norm="Linf")
def _checked_fgsm_on_defense(classifier: nn.Module, defense: DefendedModel, spec: dict) -> Attack:
    """Kim et al.'s checked FGSM through the defense being fine-tuned (RT + purifier + classifier), step
    ``check_step`` x eps (their 10/255 at eps 8/255 is 1.25), ``check_points`` c (their default 3)."""
    return CheckedFGSM(
        defense,
        eps=spec["eps"],
        alpha=spec.get("check_step", 1.25) * spec["eps"],
        check_points=spec.get("check_points", 3),
    )
