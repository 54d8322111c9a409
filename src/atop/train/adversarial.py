"""PGD adversarial training (Madry et al. 2018): the paper's "AT" baseline row.

Each training batch is replaced by PGD adversarial examples against the model
being trained (Linf, random start), made with torchattacks in the model's eval
mode, then the classifier recipe takes its step on them. Everything else - the
recipe, per-epoch seeding (the random starts included), resume - is the
classifier stage's.

Robust overfitting (Rice et al. 2020): after each epoch a PGD attack (``val_steps``
steps of eps/4, Rice et al.'s 2/255 at 8/255) scores the validation split (its
first ``val_samples`` images), and the epoch with the highest validation robust
accuracy is the one kept.

Overfitting monitor (``monitor``; monitor.py): clean, FGSM and PGD accuracy
on fixed training and validation batches after every epoch, as curve columns; it changes no weight.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import resolve_numbers
from ..data import PreparedData
from ..diagnostics.settings import monitor_settings
from ..fastpath import FastPath
from ..torchattacks_lean import torchattacks
from .classifier import fit_classifier, recipe
from .loop import epoch_seed
from .monitor import OverfittingMonitor

VALIDATION_DEFAULTS = {"val_samples": None, "val_steps": 10}
NOT_TRAINING = ("monitor",)  # settings that change no trained weight: a resume file may differ in them
SELECTED_METRIC = "val_robust_accuracy"


def robust_accuracy(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int, seed: int, batch_size: int = 256
) -> float:
    """Accuracy under PGD (random start, step eps/4) with the same random starts every call."""
    device = next(model.parameters()).device
    attack = torchattacks.PGD(model, eps=eps, alpha=eps / 4, steps=steps, random_start=True)
    torch.manual_seed(seed)
    correct = 0
    for start in range(0, len(y), batch_size):
        xb, yb = x[start : start + batch_size].to(device), y[start : start + batch_size].to(device)
        adversarial = attack(xb, yb)
        with torch.no_grad():
            correct += (model(adversarial).argmax(1) == yb).sum().item()
    return correct / len(y)


def train_adversarial(
    data: PreparedData,
    classifier_spec: dict,
    attack_spec: dict,
    seed: int,
    device: torch.device,
    resume_path,
    fast: FastPath = FastPath(),
):
    """Return ``(model, model_meta, history)`` of the adversarially trained classifier at its best
    validation robust accuracy; history rows mark that epoch with ``selected`` = 1."""
    attack_spec = {**VALIDATION_DEFAULTS, **resolve_numbers(attack_spec)}
    monitor = OverfittingMonitor(
        (data.images("train"), data.labels("train")),
        (data.images("val"), data.labels("val")),
        attack_spec["eps"],
        monitor_settings(attack_spec.get("monitor"), "adversarial_training.monitor"),
    )
    attack_spec = {k: v for k, v in attack_spec.items() if k not in NOT_TRAINING}
    x_val, y_val = data.images("val")[: attack_spec["val_samples"]], data.labels("val")[: attack_spec["val_samples"]]

    def pgd_examples(model: nn.Module) -> torchattacks.PGD:
        eps, alpha, steps = attack_spec["eps"], attack_spec["alpha"], attack_spec["steps"]
        return torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=True)

    def validate(model: nn.Module) -> dict[str, float]:
        accuracy = robust_accuracy(
            model, x_val, y_val, attack_spec["eps"], attack_spec["val_steps"], epoch_seed(seed, 0, stream=3)
        )
        return {SELECTED_METRIC: accuracy} | monitor(model)

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
        validate=validate,
        select=SELECTED_METRIC,
    )


def selected_epoch(history: list[dict[str, float]]) -> int:
    """The epoch :func:`train_adversarial` kept."""
    return next(int(row["epoch"]) for row in history if row.get("selected"))
