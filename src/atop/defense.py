"""The defended model: [0, 1] image -> RT -> purifier -> classifier logits.

Defense kinds name the rows of the paper's tables (registry in defense_kinds.py):
``standard`` is the classifier alone, ``at`` the adversarially trained classifier
alone, ``ap-<variant>`` puts RT and a pre-trained purifier in front, ``atop-<variant>``
RT and the fine-tuned purifier.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .defense_kinds import CLASSIFIER_STAGES, DEFENSES, DefenseKind, split_defense
from .fastpath import FastPath
from .io import CheckpointError, load_checkpoint
from .models import build_classifier, build_purifier
from .transforms import RandomTransform, build_transform

# DEFENSES and DefenseKind live torch-free in defense_kinds.py (the Snakefile reads them).
__all__ = ["DEFENSES", "DefendedModel", "DefenseKind", "build_defense", "load_classifier", "load_purifier"]


class DefendedModel(nn.Module):
    """``f(g(t(x)))``; with no purifier it is the classifier alone."""

    def __init__(
        self,
        classifier: nn.Module,
        purifier: nn.Module | None = None,
        transform: RandomTransform | None = None,
    ) -> None:
        super().__init__()
        if (purifier is None) != (transform is None):
            raise ValueError("a purifier needs its random transform and vice versa")
        self.classifier = classifier
        self.purifier = purifier
        self.transform = transform

    @property
    def randomized(self) -> bool:
        return self.transform is not None

    def purify(self, x: torch.Tensor) -> torch.Tensor:
        if self.purifier is None:
            return x
        return self.transform.purify(self.purifier, x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.purify(x))

    def train(self, mode: bool = True) -> DefendedModel:
        # The classifier is frozen in every defense; torchattacks toggles the whole
        # module's mode around each call, which would flip its BatchNorm to training.
        super().train(mode)
        self.classifier.eval()
        return self

    def reseed(self, seed: int) -> None:
        if self.transform is not None:
            self.transform.reseed(seed)


class Autocast(nn.Module):
    """Runs the wrapped network under autocast and hands fp32 back (so losses and RT stay fp32)."""

    def __init__(self, network: nn.Module, fast: FastPath, device: torch.device) -> None:
        super().__init__()
        self.network, self.fast, self.device = network, fast, torch.device(device)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        with self.fast.mixed_precision(self.device):
            return self.network(*inputs).float()


def fast_defense(defense: DefendedModel, fast: FastPath, device: torch.device) -> DefendedModel:
    """``defense`` with the evaluation fast path applied to its networks (RT stays as it is)."""
    networks = {"classifier": defense.classifier}
    if defense.purifier is not None:
        networks["purifier"] = defense.purifier
    for name, network in networks.items():
        network = fast.runner(fast.prepare(network))
        if fast.autocast != "none":
            network = Autocast(network, fast, device)
        setattr(defense, name, network)
    return defense


def load_classifier(path: str | Path) -> tuple[nn.Module, dict]:
    state, meta = load_checkpoint(path, expect_kind="classifier")
    model = build_classifier(**meta["model"])
    _load_state(model, state, path)
    return model.eval().requires_grad_(False), meta


def load_purifier(path: str | Path, seed: int = 0) -> tuple[nn.Module, RandomTransform, dict]:
    state, meta = load_checkpoint(path, expect_kind="purifier")
    parts = build_purifier(**meta["model"])
    _load_state(parts.as_module(), state, path)
    transform = build_transform(meta["transform"]["name"], seed=seed, **meta["transform"]["params"])
    return parts.generator.eval().requires_grad_(False), transform, meta


def _load_state(model: nn.Module, state: dict, path) -> None:
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise CheckpointError(f"{path} does not fit the model its metadata names: {error}") from error


def build_defense(
    name: str, classifier_path: str | Path, purifier_path: str | Path | None, seed: int
) -> tuple[DefendedModel, dict]:
    """The defense ``name`` names, and what it was built from (for the result JSON)."""
    kind, variant = split_defense(name)
    spec = DEFENSES[kind]
    classifier, classifier_meta = load_classifier(classifier_path)
    if classifier_meta["stage"] not in CLASSIFIER_STAGES[spec.classifier]:
        raise CheckpointError(
            f"defense {name!r} needs the {spec.classifier} classifier, {classifier_path} is {classifier_meta['stage']}"
        )
    info = {"defense_kind": kind, "classifier_stage": classifier_meta["stage"], "purifier_variant": variant}
    if spec.purifier_stage is None:
        return DefendedModel(classifier).eval(), info
    if purifier_path is None:
        raise ValueError(f"defense {name!r} needs a {spec.purifier_stage} purifier checkpoint")
    generator, transform, meta = load_purifier(purifier_path, seed=seed)
    if meta["stage"] != spec.purifier_stage:
        raise CheckpointError(
            f"defense {name!r} needs a {spec.purifier_stage} purifier, {purifier_path} is {meta['stage']}"
        )
    if variant is not None and meta.get("variant") not in (None, variant):
        raise CheckpointError(
            f"defense {name!r} needs purifier variant {variant!r}, {purifier_path} is {meta['variant']!r}"
        )
    info |= {
        "purifier_variant": variant or meta.get("variant"),  # bare ap / atop: the checkpoint says which
        "purifier": meta["model"]["arch"],
        "transform": meta["transform"]["name"],
    }
    return DefendedModel(classifier, generator, transform).eval(), info
