"""Attack registry over torchattacks, plus what torchattacks lacks or gets wrong.

A builder takes the model under attack (a module mapping [0, 1] images to
logits: the whole defended system when a defense is evaluated) and the
attack's parameters from the config, and returns a torchattacks ``Attack``.
Keyword-only builder parameters (``num_classes``, ``seed``, ``draws``) come
from the evaluation, not the config. Build attacks after the model is on its
device: torchattacks reads the device from the model's first parameter.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

import torchattacks
from torch import nn
from torchattacks.attack import Attack

from ..registry import Registry
from .bpda import IdentityBackwardDefense
from .ensemble import WorstCaseEnsemble
from .eot import BatchedEOTPGD
from .stadv import StAdv

ATTACKS: Registry = Registry("attack")
CONTEXT_PARAMETERS = ("num_classes", "seed", "draws")


@dataclass(frozen=True)
class AttackEntry:
    build: Callable[..., Attack]
    norm: str  # threat model: Linf, L2 or flow; an attack taking a `norm` parameter overrides it
    white_box: bool = True
    upper_bound: bool = False  # gradients skip part of the defense: the result bounds robustness from above


def register_attack(name: str, norm: str, white_box: bool = True, upper_bound: bool = False):
    def add(build: Callable[..., Attack]):
        ATTACKS.register(name)(AttackEntry(build, norm, white_box, upper_bound))
        return build

    return add


@register_attack("fgsm", norm="Linf")
def fgsm(model: nn.Module, eps: float) -> Attack:
    return torchattacks.FGSM(model, eps=eps)


@register_attack("pgd_linf", norm="Linf")
def pgd_linf(model: nn.Module, eps: float, alpha: float, steps: int, random_start: bool = True) -> Attack:
    return torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=random_start)


@register_attack("pgd_l2", norm="L2")
def pgd_l2(model: nn.Module, eps: float, alpha: float, steps: int, random_start: bool = True) -> Attack:
    return torchattacks.PGDL2(model, eps=eps, alpha=alpha, steps=steps, random_start=random_start)


class BudgetedCW(torchattacks.CW):
    """torchattacks' CW-L2, with results projected onto the L2 ball of radius ``eps``.

    CW minimises the perturbation instead of respecting a budget; projecting
    makes its robust accuracy comparable with the other L2 attacks at ``eps``.
    """

    def __init__(self, model, eps, c=1.0, kappa=0.0, steps=100, lr=0.01):
        super().__init__(model, c=c, kappa=kappa, steps=steps, lr=lr)
        self.eps = eps

    def forward(self, images, labels):
        images = images.clone().detach().to(self.device)
        delta = super().forward(images, labels) - images
        norms = delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        return (images + delta * (self.eps / norms).clamp(max=1.0)).clamp(0, 1).detach()


@register_attack("cw_l2", norm="L2")
def cw_l2(model: nn.Module, eps: float, c: float = 1.0, kappa: float = 0.0, steps: int = 100, lr: float = 0.01):
    return BudgetedCW(model, eps=eps, c=c, kappa=kappa, steps=steps, lr=lr)


@register_attack("square", norm="Linf", white_box=False)
def square(model: nn.Module, eps: float, n_queries: int = 5000, p_init: float = 0.8, *, seed: int) -> Attack:
    """Black-box score-based attack; also the obfuscation check's reference for white-box attacks."""
    return torchattacks.Square(model, norm="Linf", eps=eps, n_queries=n_queries, p_init=p_init, n_restarts=1, seed=seed)


@register_attack("eot_pgd", norm="Linf")
def eot_pgd(model: nn.Module, eps: float, alpha: float, steps: int, eot: int, random_start: bool = True):
    """Full-gradient PGD through the whole (randomized) model with batched EOT."""
    return BatchedEOTPGD(model, eps=eps, alpha=alpha, steps=steps, eot_iter=eot, random_start=random_start)


@register_attack("bpda_eot", norm="Linf", upper_bound=True)
def bpda_eot(model: nn.Module, eps: float, alpha: float, steps: int, eot: int, random_start: bool = True):
    """EOT-PGD with the purifier's backward pass as identity: an upper bound on robustness."""
    if not hasattr(model, "purify"):
        raise ValueError("bpda_eot needs a defended model (with a purify step)")
    wrapped = IdentityBackwardDefense(model)
    return BatchedEOTPGD(wrapped, eps=eps, alpha=alpha, steps=steps, eot_iter=eot, random_start=random_start)


def _require_classes(attack: str, num_classes: int, minimum: int, why: str) -> None:
    """DLR losses index the sorted logits; with too few classes torchattacks fails mid-attack."""
    if num_classes < minimum:
        raise ValueError(f"{attack} needs at least {minimum} classes ({why}); this dataset has {num_classes}")


def _target_count(num_classes: int) -> int:
    # The reference attacks 9 target classes; torchattacks attacks all others (99 on CIFAR-100).
    return min(9, num_classes - 1)


@register_attack("aa_standard", norm="Linf")
def aa_standard(
    model: nn.Module,
    eps: float,
    norm: str = "Linf",
    steps: int = 100,
    n_queries: int = 5000,
    *,
    num_classes: int,
    seed: int,
    draws: int,
) -> Attack:
    """AutoAttack 'standard' with the reference settings, from torchattacks' components.

    APGD-CE, APGD-T (9 targets), FAB-T (9 targets), Square (5000 queries); 100
    iterations; one restart each; a fixed seed; per-sample worst case.
    """
    _require_classes("aa_standard", num_classes, 4, "APGD-T's targeted DLR loss uses the 4 largest logits")
    apgd_t = torchattacks.APGDT(model, norm=norm, eps=eps, steps=steps, n_restarts=1, seed=seed, n_classes=num_classes)
    fab_t = torchattacks.FAB(
        model, norm=norm, eps=eps, steps=steps, n_restarts=1, seed=seed, multi_targeted=True, n_classes=num_classes
    )
    apgd_t.n_target_classes = fab_t.n_target_classes = _target_count(num_classes)
    attacks = [
        torchattacks.APGD(model, norm=norm, eps=eps, steps=steps, n_restarts=1, seed=seed, loss="ce"),
        apgd_t,
        fab_t,
        torchattacks.Square(model, norm=norm, eps=eps, n_queries=n_queries, n_restarts=1, p_init=0.8, seed=seed),
    ]
    return WorstCaseEnsemble(model, attacks, draws=draws)


@register_attack("aa_rand", norm="Linf")
def aa_rand(
    model: nn.Module,
    eps: float,
    norm: str = "Linf",
    steps: int = 100,
    eot: int = 20,
    *,
    num_classes: int,
    seed: int,
    draws: int,
) -> Attack:
    """AutoAttack 'rand' for randomized defenses: APGD-CE and APGD-DLR with EOT 20."""
    _require_classes("aa_rand", num_classes, 3, "APGD's DLR loss uses the 3 largest logits")
    attacks = [
        torchattacks.APGD(model, norm=norm, eps=eps, steps=steps, n_restarts=1, seed=seed, loss=loss, eot_iter=eot)
        for loss in ("ce", "dlr")
    ]
    return WorstCaseEnsemble(model, attacks, draws=draws)


@register_attack("stadv", norm="flow")
def stadv(model: nn.Module, bound: float = 0.05, tau: float = 0.05, steps: int = 100, lr: float = 0.01, eot: int = 1):
    """Spatially transformed adversarial examples: the paper's unseen, non-Lp attack."""
    return StAdv(model, bound=bound, tau=tau, steps=steps, lr=lr, eot_iter=eot)


def config_parameters(method: str) -> dict[str, inspect.Parameter]:
    """The parameters of ``method`` that the config sets (not the model, not the context)."""
    signature = inspect.signature(ATTACKS[method].build)
    return {
        name: p
        for name, p in signature.parameters.items()
        if name != "model" and p.kind is not inspect.Parameter.KEYWORD_ONLY
    }


def build_attack(method: str, model: nn.Module, params: dict, **context) -> Attack:
    """Build ``method`` with ``params``; unknown or missing parameters are named in the error.

    ``context`` supplies the evaluation's ``num_classes``, ``seed`` and ``draws``
    to the builders that declare them.
    """
    entry = ATTACKS[method]
    accepted = config_parameters(method)
    unknown = sorted(set(params) - set(accepted))
    missing = [name for name, p in accepted.items() if p.default is inspect.Parameter.empty and name not in params]
    if unknown or missing:
        raise ValueError(
            f"attack {method!r}: unknown parameters {unknown}, missing parameters {missing}; it takes {list(accepted)}"
        )
    needed = [
        name
        for name, p in inspect.signature(entry.build).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    ]
    absent = [name for name in needed if name not in context]
    if absent:
        raise ValueError(f"attack {method!r} needs {absent} from the evaluation")
    return entry.build(model, **params, **{name: context[name] for name in needed})


def threat_norm(method: str, params: dict) -> str:
    return params.get("norm", ATTACKS[method].norm)
