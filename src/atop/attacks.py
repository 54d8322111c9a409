"""Attack registry over torchattacks, plus a batched full-gradient EOT-PGD.

A builder takes the model under attack (a module mapping [0, 1] images to
logits, so the whole defended system when a defense is evaluated) and the
attack's parameters from the config, and returns a torchattacks ``Attack``.
Build attacks after the model is on its device: torchattacks reads the device
from the model's first parameter.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
import torchattacks
from torchattacks.attack import Attack
from torch import nn

from .registry import Registry

ATTACKS: Registry = Registry("attack")


@dataclass(frozen=True)
class AttackEntry:
    build: Callable[..., Attack]
    norm: str


def register_attack(name: str, norm: str):
    def add(build: Callable[..., Attack]):
        ATTACKS.register(name)(AttackEntry(build, norm))
        return build

    return add


class BatchedEOTPGD(Attack):
    """PGD-Linf with expectation over transformation, all EOT samples in one batch.

    Each step replicates the batch ``eot_iter`` times, so a randomized model
    draws independent randomness per replica, and one forward and backward
    pass gives the gradient of the summed loss - the same expected gradient
    as torchattacks' sequential ``EOTPGD`` at a fraction of the cost.
    ``max_batch`` bounds the replicated batch; larger ones are split.
    """

    def __init__(self, model, eps=8 / 255, alpha=2 / 255, steps=10, eot_iter=2, random_start=True, max_batch=4096):
        super().__init__("BatchedEOTPGD", model)
        self.eps, self.alpha, self.steps = eps, alpha, steps
        self.eot_iter, self.random_start, self.max_batch = eot_iter, random_start, max_batch
        self.supported_mode = ["default", "targeted"]

    def eot_gradient(self, adv: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        adv = adv.detach().requires_grad_(True)
        per_chunk = max(1, self.max_batch // len(adv))
        grad = torch.zeros_like(adv)
        remaining = self.eot_iter
        while remaining > 0:
            k = min(per_chunk, remaining)
            logits = self.get_logits(adv.repeat(k, 1, 1, 1))
            cost = F.cross_entropy(logits, labels.repeat(k), reduction="sum")
            if self.targeted:
                cost = -cost
            grad += torch.autograd.grad(cost, adv)[0]
            remaining -= k
        return grad / self.eot_iter

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        images = images.clone().detach().to(self.device)
        labels = labels.clone().detach().to(self.device)
        if self.targeted:
            labels = self.get_target_label(images, labels)
        adv = images.clone()
        if self.random_start:
            adv = (adv + torch.empty_like(adv).uniform_(-self.eps, self.eps)).clamp(0, 1)
        for _ in range(self.steps):
            grad = self.eot_gradient(adv, labels)
            adv = adv.detach() + self.alpha * grad.sign()
            adv = (images + (adv - images).clamp(-self.eps, self.eps)).clamp(0, 1)
        return adv.detach()


@register_attack("fgsm", norm="Linf")
def fgsm(model: nn.Module, eps: float) -> Attack:
    return torchattacks.FGSM(model, eps=eps)


@register_attack("pgd_linf", norm="Linf")
def pgd_linf(model: nn.Module, eps: float, alpha: float, steps: int, random_start: bool = True):
    return torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=random_start)


@register_attack("eot_pgd", norm="Linf")
def eot_pgd(model: nn.Module, eps: float, alpha: float, steps: int, eot: int, random_start: bool = True):
    """Full-gradient PGD through the whole (randomized) model with batched EOT."""
    return BatchedEOTPGD(model, eps=eps, alpha=alpha, steps=steps, eot_iter=eot, random_start=random_start)


def build_attack(method: str, model: nn.Module, params: dict) -> Attack:
    """Build ``method`` with ``params``; unknown or missing parameters are named in the error."""
    builder = ATTACKS[method].build
    signature = inspect.signature(builder)
    accepted = [name for name in signature.parameters if name != "model"]
    unknown = sorted(set(params) - set(accepted))
    missing = [
        name for name, p in signature.parameters.items()
        if name != "model" and p.default is inspect.Parameter.empty and name not in params
    ]
    if unknown or missing:
        raise ValueError(
            f"attack {method!r}: unknown parameters {unknown}, missing parameters {missing}; "
            f"it takes {accepted}"
        )
    return builder(model, **params)
