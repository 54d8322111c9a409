"""Attack registry over torchattacks, plus what torchattacks lacks or gets wrong.

A builder takes the model under attack (a module mapping [0, 1] images to
logits: the whole defended system when a defense is evaluated) and the
attack's parameters from the config, and returns a torchattacks ``Attack``.
Keyword-only builder parameters (``num_classes``, ``seed``, ``draws``) come
from the evaluation, not the config. Build attacks after the model is on its
device: torchattacks reads the device from the model's first parameter.

Each builder imports the modules its attack runs (eot.py, bpda.py, apgd.py, ...) inside
itself, so a job loads, and src/atop/code_closure.py hashes, only its attacks' code: an
edit of StAdv reruns the StAdv evaluations, not the training or the other attacks'.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from ..attack_catalog import DEFAULT_EOT, AttackFacts, attack_facts
from ..registry import Registry
from ..torchattacks_lean import Attack, torchattacks

ATTACKS: Registry = Registry("attack")
CONTEXT_PARAMETERS = ("num_classes", "seed", "draws")


@dataclass(frozen=True)
class AttackEntry:
    build: Callable[..., Attack]
    facts: AttackFacts  # norm, gradient, family, cost: src/atop/attack_catalog.py

    @property
    def norm(self) -> str:
        return self.facts.norm

    @property
    def gradient(self) -> str:
        return self.facts.gradient

    @property
    def white_box(self) -> bool:
        return self.facts.white_box

    @property
    def upper_bound(self) -> bool:
        return self.facts.upper_bound


def register_attack(name: str):
    """Register ``name``'s builder; its facts are the catalog's (a builder without facts is refused)."""
    facts = attack_facts(name)

    def add(build: Callable[..., Attack]):
        ATTACKS.register(name)(AttackEntry(build, facts))
        return build

    return add


# Every gradient attack takes ``eot``: "auto" (the default) is the evaluation's EOT on a randomized
# model and 1 on a deterministic one; build_attack resolves it before a builder sees it.


@register_attack("fgsm")
def fgsm(model: nn.Module, eps: float, eot: int | str = "auto") -> Attack:
    """One signed-gradient step of size eps (FGSM), the gradient EOT-averaged."""
    from .eot import BatchedEOTPGD

    return BatchedEOTPGD(model, eps=eps, alpha=eps, steps=1, eot_iter=eot, random_start=False)


@register_attack("pgd_linf")
def pgd_linf(
    model: nn.Module, eps: float, alpha: float, steps: int, random_start: bool = True, eot: int | str = "auto"
) -> Attack:
    from .eot import BatchedEOTPGD

    return BatchedEOTPGD(model, eps=eps, alpha=alpha, steps=steps, eot_iter=eot, random_start=random_start)


@register_attack("pgd_l2")
def pgd_l2(
    model: nn.Module, eps: float, alpha: float, steps: int, random_start: bool = True, eot: int | str = "auto"
) -> Attack:
    from .eot import BatchedEOTPGD

    return BatchedEOTPGD(model, eps=eps, alpha=alpha, steps=steps, eot_iter=eot, random_start=random_start, norm="L2")


@register_attack("cw_l2")
def cw_l2(
    model: nn.Module,
    eps: float,
    alpha: float,
    steps: int = 100,
    random_start: bool = True,
    eot: int | str = "auto",
) -> Attack:
    """The CW margin loss maximised inside the L2 ball of radius eps (L2 PGD with EOT).

    A budgeted attack, unlike Carlini-Wagner's norm-minimising optimisation, whose
    "smallest successful perturbation" is judged on one pass of a randomized model.
    """
    from .eot import BatchedEOTPGD

    return BatchedEOTPGD(
        model, eps=eps, alpha=alpha, steps=steps, eot_iter=eot, random_start=random_start, norm="L2", loss="cw"
    )


@register_attack("square")
def square(model: nn.Module, eps: float, n_queries: int = 5000, p_init: float = 0.8, *, seed: int) -> Attack:
    """Black-box score-based attack; also the obfuscation check's reference for white-box attacks."""
    return torchattacks.Square(model, norm="Linf", eps=eps, n_queries=n_queries, p_init=p_init, n_restarts=1, seed=seed)


@register_attack("eot_pgd")
def eot_pgd(
    model: nn.Module,
    eps: float,
    alpha: float,
    steps: int,
    eot: int,
    random_start: bool = True,
    eot_weighting: str = "mean",
):
    """Full-gradient PGD through the whole (randomized) model with batched EOT; ``eot_weighting:
    selective`` weights the draws closest to a misclassification (selective EOT, DiffHammer)."""
    from .eot import BatchedEOTPGD

    return BatchedEOTPGD(
        model,
        eps=eps,
        alpha=alpha,
        steps=steps,
        eot_iter=eot,
        random_start=random_start,
        eot_weighting=eot_weighting,
    )


@register_attack("bpda_eot")
def bpda_eot(model: nn.Module, eps: float, alpha: float, steps: int, eot: int, random_start: bool = True):
    """EOT-PGD with the purifier's backward pass as identity: an upper bound on robustness."""
    from .bpda import IdentityBackwardDefense
    from .eot import BatchedEOTPGD

    if not hasattr(model, "purify"):
        raise ValueError("bpda_eot needs a defended model (with a purify step)")
    wrapped = IdentityBackwardDefense(model)
    return BatchedEOTPGD(wrapped, eps=eps, alpha=alpha, steps=steps, eot_iter=eot, random_start=random_start)


def _classifier_of(method: str, model: nn.Module) -> nn.Module:
    if not hasattr(model, "classifier"):
        raise ValueError(f"{method} needs a defended model (with a classifier)")
    return model.classifier


@register_attack("pgd_classifier")
def pgd_classifier(model: nn.Module, eps: float, alpha: float, steps: int, random_start: bool = True) -> Attack:
    """PGD-Linf (CE) on the classifier ALONE; the examples are then scored on the whole defense.

    The paper's RT x FT ablation protocol (PGD-1000): a transfer attack, an UPPER BOUND.
    """
    from .eot import BatchedEOTPGD

    classifier = _classifier_of("pgd_classifier", model)
    return BatchedEOTPGD(classifier, eps=eps, alpha=alpha, steps=steps, eot_iter=1, random_start=random_start)


@register_attack("cw_classifier")
def cw_classifier(model: nn.Module, eps: float, alpha: float, steps: int, random_start: bool = True) -> Attack:
    """PGD-Linf on the CW margin loss of the classifier ALONE (the paper's CW-100), scored on the defense.

    A transfer attack, an UPPER BOUND.
    """
    from .eot import BatchedEOTPGD

    classifier = _classifier_of("cw_classifier", model)
    return BatchedEOTPGD(
        classifier, eps=eps, alpha=alpha, steps=steps, eot_iter=1, random_start=random_start, loss="cw"
    )


def _require_classes(attack: str, num_classes: int, minimum: int, why: str) -> None:
    """DLR losses index the sorted logits; with too few classes torchattacks fails mid-attack."""
    if num_classes < minimum:
        raise ValueError(f"{attack} needs at least {minimum} classes ({why}); this dataset has {num_classes}")


def _target_count(num_classes: int) -> int:
    # The reference attacks 9 target classes; torchattacks attacks all others (99 on CIFAR-100).
    return min(9, num_classes - 1)


@register_attack("aa_standard")
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
    iterations; one restart each; a fixed seed; per-sample worst case. APGD and
    APGD-T attack every image they are given (src/atop/attacks/apgd.py).
    """
    from .apgd import EveryImageAPGD, EveryImageAPGDT
    from .ensemble import WorstCaseEnsemble

    _require_classes("aa_standard", num_classes, 4, "APGD-T's targeted DLR loss uses the 4 largest logits")
    apgd_t = EveryImageAPGDT(
        model, norm=norm, eps=eps, steps=steps, n_restarts=1, seed=seed, n_classes=num_classes, draws=draws
    )
    fab_t = torchattacks.FAB(
        model, norm=norm, eps=eps, steps=steps, n_restarts=1, seed=seed, multi_targeted=True, n_classes=num_classes
    )
    apgd_t.n_target_classes = fab_t.n_target_classes = _target_count(num_classes)
    attacks = [
        EveryImageAPGD(model, norm=norm, eps=eps, steps=steps, n_restarts=1, seed=seed, loss="ce", draws=draws),
        apgd_t,
        fab_t,
        torchattacks.Square(model, norm=norm, eps=eps, n_queries=n_queries, n_restarts=1, p_init=0.8, seed=seed),
    ]
    return WorstCaseEnsemble(model, attacks, draws=draws)


@register_attack("aa_rand")
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
    """AutoAttack 'rand' for randomized defenses: APGD-CE and APGD-DLR with EOT 20, on every image."""
    from .apgd import EveryImageAPGD
    from .ensemble import WorstCaseEnsemble

    _require_classes("aa_rand", num_classes, 3, "APGD's DLR loss uses the 3 largest logits")
    attacks = [
        EveryImageAPGD(
            model, norm=norm, eps=eps, steps=steps, n_restarts=1, seed=seed, loss=loss, eot_iter=eot, draws=draws
        )
        for loss in ("ce", "dlr")
    ]
    return WorstCaseEnsemble(model, attacks, draws=draws)


@register_attack("stadv")
def stadv(
    model: nn.Module,
    bound: float = 0.05,
    tau: float = 0.05,
    steps: int = 100,
    lr: float = 0.01,
    eot: int | str = "auto",
    *,
    draws: int,
) -> Attack:
    """Spatially transformed adversarial examples: the paper's unseen, non-Lp attack.

    ``bound``: largest flow per axis as a fraction of the image side; ``tau``: weight of
    Xiao et al.'s flow-smoothness loss in pixel units (src/atop/attacks/stadv.py). The
    best iterate is chosen by accuracy over the evaluation's ``draws``.
    """
    from .stadv import StAdv

    return StAdv(model, bound=bound, tau=tau, steps=steps, lr=lr, eot_iter=eot, draws=draws)


def config_parameters(method: str) -> dict[str, inspect.Parameter]:
    """The parameters of ``method`` that the config sets (not the model, not the context)."""
    signature = inspect.signature(ATTACKS[method].build)
    return {
        name: p
        for name, p in signature.parameters.items()
        if name != "model" and p.kind is not inspect.Parameter.KEYWORD_ONLY
    }


def _check_parameters(method: str, params: dict) -> None:
    accepted = config_parameters(method)
    unknown = sorted(set(params) - set(accepted))
    missing = [name for name, p in accepted.items() if p.default is inspect.Parameter.empty and name not in params]
    if unknown or missing:
        raise ValueError(
            f"attack {method!r}: unknown parameters {unknown}, missing parameters {missing}; it takes {list(accepted)}"
        )
    eot = params.get("eot", "auto")
    if eot != "auto" and not (isinstance(eot, int) and not isinstance(eot, bool) and eot >= 1):
        raise ValueError(f"attack {method!r}: eot must be 'auto' or an integer >= 1, got {eot!r}")


def effective_parameters(method: str, params: dict, *, randomized: bool, eot: int | None = None) -> dict:
    """Every parameter ``method`` runs with: the config's, the builder's defaults, ``eot`` resolved.

    EOT over a deterministic model repeats one gradient, so it is 1 there; on a
    randomized model ``"auto"`` becomes ``eot``, the evaluation's EOT.
    """
    _check_parameters(method, params)
    resolved = {name: params.get(name, p.default) for name, p in config_parameters(method).items()}
    if "eot" in resolved:
        if not randomized:
            resolved["eot"] = 1
        elif resolved["eot"] == "auto":
            if eot is None:
                raise ValueError(f"attack {method!r}: eot 'auto' on a randomized model needs the evaluation's eot")
            resolved["eot"] = int(eot)
    return resolved


def build_attack(method: str, model: nn.Module, params: dict, *, eot: int | None = None, **context) -> Attack:
    """Build ``method`` with ``params``; unknown or missing parameters are named in the error.

    ``context`` supplies the evaluation's ``num_classes``, ``seed`` and ``draws``
    to the builders that declare them; ``eot`` is the EOT an ``"auto"`` resolves
    to on a randomized model (``model.randomized``; default: DEFAULT_EOT).
    """
    entry = ATTACKS[method]
    randomized = bool(getattr(model, "randomized", False))
    resolved = effective_parameters(method, params, randomized=randomized, eot=DEFAULT_EOT if eot is None else eot)
    needed = [
        name
        for name, p in inspect.signature(entry.build).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    ]
    absent = [name for name in needed if name not in context]
    if absent:
        raise ValueError(f"attack {method!r} needs {absent} from the evaluation")
    return entry.build(model, **resolved, **{name: context[name] for name in needed})


def threat_norm(method: str, params: dict) -> str:
    return params.get("norm", ATTACKS[method].norm)


def __getattr__(name: str):
    """The attack classes, importable from here as before (``from atop.attacks import BatchedEOTPGD``),
    loaded on first use (PEP 562); code_closure.py counts these imports only for code that uses them."""
    if name == "BatchedEOTPGD":
        from .eot import BatchedEOTPGD

        return BatchedEOTPGD
    if name in ("EveryImageAPGD", "EveryImageAPGDT"):
        from .apgd import EveryImageAPGD, EveryImageAPGDT

        return {"EveryImageAPGD": EveryImageAPGD, "EveryImageAPGDT": EveryImageAPGDT}[name]
    if name == "IdentityBackwardDefense":
        from .bpda import IdentityBackwardDefense

        return IdentityBackwardDefense
    if name == "WorstCaseEnsemble":
        from .ensemble import WorstCaseEnsemble

        return WorstCaseEnsemble
    if name == "StAdv":
        from .stadv import StAdv

        return StAdv
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
