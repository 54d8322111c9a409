"""How fine-tuning makes its adversarial examples x' (a registry).

Kept apart from the training code so that the evaluation, which labels its
attacks "seen" or "unseen" by the fine-tuning attack's norm, does not depend
on training modules.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torchattacks
from torch import nn
from torchattacks.attack import Attack

from .defense import DefendedModel
from .registry import Registry

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
