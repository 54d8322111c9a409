"""What each evaluation attack is, described once. Torch-free: the Snakefile, the config checks, the
diagnostics' settings, the report and the benchmarks read it without importing the builders.

An attack is added in two places side by side: its facts here and its builder in
``src/atop/attacks/`` (``@register_attack(name)`` refuses a builder without facts, and a test
refuses facts without a builder); ``tools/schema_registries.py`` (``make generate``) writes its name
and the parameters its builder takes into ``config/schema.yaml``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

# EOT samples per gradient step when an attack's ``eot`` is "auto" on a randomized model and the
# evaluation names none (config: evaluation.eot, whose schema default a test keeps equal to this).
DEFAULT_EOT = 4
NORMS = ("Linf", "L2", "flow")
# What an attack differentiates: the whole defended model, the classifier at the purified image
# (BPDA identity), the classifier alone at the input (transfer), or nothing (score-based).
GRADIENTS = ("full", "bpda_identity", "classifier_only", "none")


def _steps(default: int = 1) -> Callable[[dict, int], float]:
    return lambda params, eot: params.get("steps", default)


def _steps_times_eot(default: int = 1, factor: int = 1) -> Callable[[dict, int], float]:
    return lambda params, eot: factor * params.get("steps", default) * eot


def _queries(params: dict, eot: int) -> float:
    return params.get("n_queries", 5000) / 3


@dataclass(frozen=True)
class AttackFacts:
    norm: str  # threat model; an attack taking a ``norm`` parameter overrides it per config entry
    gradient: str  # one of GRADIENTS
    family: str  # the row of the paper's tables it meets (aa_standard -> autoattack, cw_l2 -> cw)
    # gradient passes per image at these parameters and EOT (1 on a deterministic defense):
    # benchmarks/gpu_hours.py prices attack jobs with it
    cost: Callable[[dict, int], float]
    paper_family: str | None = None  # the name the paper's RT x FT ablation gives it, where that differs
    description: str = ""
    # every forward pass it makes is a query of the whole defense, and it records which images one
    # misclassified (attacks/eot.py): the while-optimizing protocol reads it (protocols.py)
    records_queries: bool = False
    # it takes ``eot_weighting: selective`` (selective EOT: the protocols' selective_eot job)
    selective_eot: bool = False

    def __post_init__(self) -> None:
        if self.norm not in NORMS or self.gradient not in GRADIENTS:
            raise ValueError(f"norm must be one of {NORMS} and gradient one of {GRADIENTS}: {self}")

    @property
    def white_box(self) -> bool:
        return self.gradient != "none"

    @property
    def upper_bound(self) -> bool:
        """Gradients skip part of the defense: the result bounds robustness from above."""
        return self.gradient in ("bpda_identity", "classifier_only")


ATTACK_FACTS: dict[str, AttackFacts] = {
    "fgsm": AttackFacts(
        "Linf", "full", "fgsm", lambda params, eot: 1, description="one signed-gradient step", records_queries=True
    ),
    "pgd_linf": AttackFacts("Linf", "full", "pgd", _steps(), description="PGD, Linf ball", records_queries=True),
    "pgd_l2": AttackFacts("L2", "full", "pgd_l2", _steps(), description="PGD, L2 ball", records_queries=True),
    "cw_l2": AttackFacts(
        "L2", "full", "cw", _steps(100), description="CW margin loss in the L2 ball", records_queries=True
    ),
    "square": AttackFacts("Linf", "none", "square", _queries, description="score-based black box"),
    "eot_pgd": AttackFacts(
        "Linf",
        "full",
        "pgd_eot",
        _steps_times_eot(),
        description="full-gradient PGD with EOT",
        records_queries=True,
        selective_eot=True,
    ),
    "bpda_eot": AttackFacts(
        "Linf",
        "bpda_identity",
        "pgd_eot",
        _steps_times_eot(),
        description="BPDA (identity) through the purifier",
        records_queries=True,  # its forward passes are the defense's own
    ),
    "pgd_classifier": AttackFacts(
        "Linf", "classifier_only", "pgd_classifier", _steps(), "pgd", "transfer from the classifier alone"
    ),
    "cw_classifier": AttackFacts(
        "Linf", "classifier_only", "cw_classifier", _steps(), "cw", "CW loss on the classifier alone (transfer)"
    ),
    "aa_standard": AttackFacts(
        "Linf",
        "full",
        "autoattack",
        # APGD-CE 100 + APGD-T 9 x 100 + FAB-T 9 x 100 + Square 5000 forwards: an upper bound
        lambda params, eot: params.get("steps", 100) * 19 + params.get("n_queries", 5000) / 3,
        description="AutoAttack standard",
    ),
    "aa_rand": AttackFacts("Linf", "full", "autoattack", _steps_times_eot(100, 2), description="AutoAttack rand"),
    "stadv": AttackFacts("flow", "full", "stadv", _steps_times_eot(100), description="spatial flow (unseen)"),
}

# Derived, never kept by hand
L2_METHODS = frozenset(name for name, facts in ATTACK_FACTS.items() if facts.norm == "L2")
PARTIAL_GRADIENT_METHODS = frozenset(name for name, facts in ATTACK_FACTS.items() if facts.gradient != "full")


def attack_facts(method: str) -> AttackFacts:
    try:
        return ATTACK_FACTS[method]
    except KeyError:
        raise KeyError(f"unknown attack method {method!r}; known: {', '.join(sorted(ATTACK_FACTS))}") from None


def attack_family(method: str) -> str:
    """The family of the paper's tables; a method this catalog does not know is its own family."""
    facts = ATTACK_FACTS.get(method)
    return facts.family if facts else method


def paper_family(method: str, family: str) -> str:
    facts = ATTACK_FACTS.get(method)
    return (facts.paper_family if facts else None) or family
