"""The defended model: [0, 1] image -> RT -> purifier -> classifier logits.

Defense kinds name the rows of the paper's tables (registry in defense_kinds.py):
``standard`` is the classifier alone, ``at`` the adversarially trained classifier
alone, ``ap-<variant>`` puts RT and a pre-trained purifier in front, ``atop-<variant>``
RT and the fine-tuned purifier, ``custom-<name>`` is a user's module (CustomDefense; its
config entry in custom_defenses.py).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import sys
from pathlib import Path

import torch
from torch import nn

from .custom_defenses import parse_factory
from .defense_kinds import CLASSIFIER_STAGES, DEFENSES, DefenseKind, split_defense
from .fastpath import FastPath
from .io import CheckpointError, load_checkpoint
from .models import build_classifier, build_purifier
from .transforms import RandomTransform, build_transform

# DEFENSES and DefenseKind live torch-free in defense_kinds.py (the Snakefile reads them).
__all__ = [
    "DEFENSES",
    "CustomDefense",
    "DefendedModel",
    "DefenseKind",
    "build_defense",
    "load_classifier",
    "load_purifier",
]


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


class CustomDefenseError(ValueError):
    """A custom defense's factory cannot be used (the CLI prints it in one line, like config errors)."""


class CustomDefense(nn.Module):
    """A user's defense (custom_defenses.py) with the interface the evaluation expects of one.

    Its randomness is its own: each forward pass runs on the defense's own RNG state (CPU and
    CUDA), swapped in and out around the call, so the attack's random starts never shift the
    defense's draws and ``reseed`` makes a job's draws repeatable whatever the module uses
    (``torch.rand``, dropout, ``torch.randn_like``).
    """

    purifier = None  # no purifier this project built (BPDA and the pictures need one)

    def __init__(self, network: nn.Module, randomized: bool, seed: int = 0) -> None:
        super().__init__()
        self.network = network
        self._randomized = bool(randomized)
        self.reseed(seed)

    @property
    def randomized(self) -> bool:
        return self._randomized

    def reseed(self, seed: int) -> None:
        generator = torch.Generator().manual_seed(int(seed))
        self._cpu_state = generator.get_state()
        self._seed = int(seed)
        self._cuda_states: dict[int, torch.Tensor] = {}

    @contextlib.contextmanager
    def _own_rng(self, device: torch.device):
        cuda = [device.index or 0] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):
            torch.set_rng_state(self._cpu_state)
            for index in cuda:
                if index not in self._cuda_states:
                    torch.cuda.manual_seed(self._seed)
                    self._cuda_states[index] = torch.cuda.get_rng_state(index)
                torch.cuda.set_rng_state(self._cuda_states[index], index)
            try:
                yield
            finally:
                self._cpu_state = torch.get_rng_state()
                for index in cuda:
                    self._cuda_states[index] = torch.cuda.get_rng_state(index)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with self._own_rng(x.device):
            return self.network(x)

    def train(self, mode: bool = True) -> CustomDefense:
        # torchattacks toggles the mode around its calls; a defense is evaluated in eval mode
        # (its own randomness, if any, is declared, not BatchNorm statistics or dropout).
        super().train(mode)
        self.network.eval()
        return self


def import_factory(text: str, root: str | Path = "."):
    """The callable a factory string names (``file.py:function`` relative to ``root``, or ``module:function``)."""
    factory = parse_factory(text, "factory")
    if factory.is_file:
        path = Path(root) / factory.source
        if not path.is_file():
            raise FileNotFoundError(f"factory {text!r}: {path} does not exist")
        name = f"atop_custom_{path.stem}"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    else:
        module = importlib.import_module(factory.source)
    function = getattr(module, factory.function, None)
    if not callable(function):
        raise CustomDefenseError(f"factory {text!r}: {factory.source} has no callable {factory.function!r}")
    return function


def build_custom_defense(entry: dict, classifier: nn.Module | None, seed: int, root: str | Path = ".") -> CustomDefense:
    """The module a custom_defenses entry's factory returns, wrapped; its weights checked by sha256."""
    from .io import sha256_file

    factory = import_factory(entry["factory"], root)
    weights = None
    if entry.get("weights"):
        path = Path(root) / entry["weights"]["path"]
        actual = sha256_file(path)
        if actual != entry["weights"]["sha256"]:
            raise CheckpointError(
                f"{path} has sha256 {actual}, but custom_defenses.{entry['name']} expects {entry['weights']['sha256']}"
            )
        weights = torch.load(path, map_location="cpu", weights_only=True)
    network = factory(classifier=classifier, weights=weights, **entry.get("params", {}))
    if not isinstance(network, nn.Module):
        raise CustomDefenseError(
            f"custom_defenses.{entry['name']}: {entry['factory']} returned a {type(network).__name__}, not an nn.Module"
        )
    return CustomDefense(network.eval().requires_grad_(False), entry["randomized"], seed=seed).eval()


def fast_defense(defense: DefendedModel, fast: FastPath, device: torch.device) -> DefendedModel:
    """``defense`` with the evaluation fast path applied to its networks (RT stays as it is)."""
    if isinstance(defense, CustomDefense):
        networks = {"network": defense.network}
    else:
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
    name: str,
    classifier_path: str | Path | None,
    purifier_path: str | Path | None,
    seed: int,
    custom: dict | None = None,
) -> tuple[DefendedModel | CustomDefense, dict]:
    """The defense ``name`` names, and what it was built from (for the result JSON).

    ``custom``: a custom defense's config entry (custom_defenses.entry), for ``custom-<name>``.
    """
    kind, variant = split_defense(name)
    spec = DEFENSES[kind]
    if spec.classifier is None:
        return _build_custom(name, kind, classifier_path, seed, custom)
    if classifier_path is None:
        raise ValueError(f"defense {name!r} needs a classifier checkpoint (--classifier)")
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


def _build_custom(name: str, kind: str, classifier_path, seed: int, entry: dict | None) -> tuple[CustomDefense, dict]:
    if entry is None:
        raise ValueError(f"defense {name!r} is a custom defense: its config entry is needed (--custom-defense)")
    role = entry.get("classifier")
    if (role is None) != (classifier_path is None):
        raise ValueError(
            f"defense {name!r}: custom_defenses.{entry['name']}.classifier is {role}, "
            f"but {'a' if classifier_path else 'no'} classifier checkpoint was given"
        )
    classifier, info = None, {"defense_kind": kind, "custom_defense": entry["name"], "factory": entry["factory"]}
    if role is not None:
        classifier, meta = load_classifier(classifier_path)
        if meta["stage"] not in CLASSIFIER_STAGES[role]:
            raise CheckpointError(f"defense {name!r} needs the {role} classifier, {classifier_path} is {meta['stage']}")
        info["classifier_stage"] = meta["stage"]
    return build_custom_defense(entry, classifier, seed), info
