"""PGD adversarial training (Madry et al. 2018): the paper's "AT" baseline row.

Each training batch is replaced by PGD adversarial examples against the model
being trained (Linf, random start), made with torchattacks in the model's eval
mode, then the classifier recipe takes its step on them. Everything else - the
recipe, per-epoch seeding (the random starts included), resume - is the
classifier stage's.
"""

from __future__ import annotations

import torch
import torchattacks
from torch import nn

from ..config import resolve_numbers
from ..data import PreparedData
from ..fastpath import FastPath
from .classifier import fit_classifier, recipe


def train_adversarial(
    data: PreparedData,
    classifier_spec: dict,
    attack_spec: dict,
    seed: int,
    device: torch.device,
    resume_path,
    fast: FastPath = FastPath(),
):
    """Return ``(model, model_meta, history)`` of the adversarially trained classifier."""
    attack_spec = resolve_numbers(attack_spec)

    def pgd_examples(model: nn.Module) -> torchattacks.PGD:
        eps, alpha, steps = attack_spec["eps"], attack_spec["alpha"], attack_spec["steps"]
        return torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=True)

    fingerprint = {"spec": recipe(classifier_spec), "attack": attack_spec, "seed": seed, "data": data.info}
    return fit_classifier(
        data,
        classifier_spec,
        seed,
        device,
        resume_path,
        stage="train_adversarial",
        make_input=pgd_examples,
        fingerprint=fingerprint,
        fast=fast,
    )
