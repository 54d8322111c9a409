"""The defended model: [0, 1] image -> RT -> purifier -> classifier logits.

Defense kinds name the rows of the paper's tables: ``standard`` is the
classifier alone, ``ap`` puts RT and the pre-trained purifier in front,
``atop`` RT and the fine-tuned purifier.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .io import CheckpointError, load_checkpoint
from .models import build_classifier, build_purifier
from .registry import Registry
from .transforms import RandomTransform, build_transform


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

    def train(self, mode: bool = True) -> "DefendedModel":
        # The classifier is frozen in every defense; torchattacks toggles the whole
        # module's mode around each call, which would flip its BatchNorm to training.
        super().train(mode)
        self.classifier.eval()
        return self

    def reseed(self, seed: int) -> None:
        if self.transform is not None:
            self.transform.reseed(seed)


@dataclass(frozen=True)
class DefenseKind:
    purifier_stage: str | None  # which purifier checkpoint the defense uses, if any
    description: str


DEFENSES: Registry = Registry("defense")
DEFENSES.register("standard")(DefenseKind(None, "classifier alone"))
DEFENSES.register("ap")(DefenseKind("pretrained", "RT + pre-trained purifier (adversarial purification)"))
DEFENSES.register("atop")(DefenseKind("finetuned", "RT + fine-tuned purifier (AToP)"))


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
    kind: str, classifier_path: str | Path, purifier_path: str | Path | None, seed: int
) -> DefendedModel:
    spec = DEFENSES[kind]
    classifier, _ = load_classifier(classifier_path)
    if spec.purifier_stage is None:
        return DefendedModel(classifier).eval()
    if purifier_path is None:
        raise ValueError(f"defense {kind!r} needs a {spec.purifier_stage} purifier checkpoint")
    generator, transform, meta = load_purifier(purifier_path, seed=seed)
    if meta["stage"] != spec.purifier_stage:
        raise CheckpointError(
            f"defense {kind!r} needs a {spec.purifier_stage} purifier, {purifier_path} is {meta['stage']}"
        )
    return DefendedModel(classifier, generator, transform).eval()
