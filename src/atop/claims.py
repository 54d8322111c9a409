"""The paper's claims the report decides, as data: one entry per claim.

Each entry says what is claimed, which pairs of defenses test it (a selector for defense a, one for
defense b, and the settings both must share), on which attacks (any, or only those neither defense's
training saw), and on what metric (robust: each defense under its strongest attack; clean accuracy;
or the classifier-only vs full-gradient pairs of one defense). A claim over several pairs is
universal: supported only if every pair supports it (verdicts.universal). To add a claim, add an
entry; verdicts.py judges every entry the same way, with one Holm family over all comparisons.
A ``kind`` selector names kinds of the defense registry (defense_kinds.py), a ``defense`` selector
one defense by name. A user's own claims (config ``verdicts.claims``) become entries the same way
(``user_claims``) and are judged in the same Holm family.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from .defense_kinds import DEFENSES

ANY_ATTACK = (None, "seen", "unseen")  # attack labels a comparison may use
UNSEEN = ("unseen",)


@dataclass(frozen=True)
class ClaimSpec:
    key: str
    statement: str
    a: Mapping[str, object]  # setting -> value (or tuple of values) defense a must have
    b: Mapping[str, object] = field(default_factory=dict)
    same: tuple[str, ...] = ()  # settings a and b must share (a missing value matches a missing value)
    metric: str = "robust"  # robust | clean | gradient (classifier-only vs full gradient, one defense)
    attacks: tuple[str | None, ...] = ANY_ATTACK
    why_not: str = ""  # said when no pair has results

    def __post_init__(self) -> None:
        if self.metric not in ("robust", "clean", "gradient"):
            raise ValueError(f"claim {self.key!r}: metric must be robust, clean or gradient, not {self.metric!r}")
        for selector in (self.a, self.b):
            kinds = selector.get("kind", ())
            for kind in kinds if isinstance(kinds, tuple) else (kinds,):
                if kind not in DEFENSES:
                    raise ValueError(f"claim {self.key!r}: {kind!r} is not a defense kind (defense_kinds.py)")

    @property
    def needs_labels(self) -> bool:
        """Only unseen attacks count: without seen/unseen labels on the results it cannot be tested."""
        return None not in self.attacks


CLAIMS: tuple[ClaimSpec, ...] = (
    ClaimSpec(
        "ft_improves_over_ap",
        "Fine-tuning the purifier (AToP) makes the defense more robust than purification alone (AP).",
        a={"kind": "atop"},
        b={"kind": "ap"},
        same=("purifier", "rt"),
        why_not="no AToP / AP pair with the same purifier and RT has results",
    ),
    ClaimSpec(
        "atop_over_standard",
        "AToP is more robust than the undefended classifier.",
        a={"kind": "atop"},
        b={"kind": "standard"},
        why_not="no AToP and standard results on the same attack",
    ),
    ClaimSpec(
        "atop_generalises_beyond_at",
        "AToP generalises to unseen attacks: it beats adversarial training (AT) on attacks neither was trained on.",
        a={"kind": "atop"},
        b={"kind": "at"},
        attacks=UNSEEN,
        why_not="no AT defense with unseen-attack results next to AToP",
    ),
    ClaimSpec(
        "ft_gain_holds_on_unseen",
        "Fine-tuning's gain over AP holds on unseen attacks (RT keeps FT from over-fitting to its attack).",
        a={"kind": "atop"},
        b={"kind": "ap"},
        same=("purifier", "rt"),
        attacks=UNSEEN,
        why_not="no AToP / AP pair has unseen-attack results",
    ),
    ClaimSpec(
        "atop_keeps_clean_accuracy_over_at",
        "AToP keeps a higher clean accuracy than adversarial training (AT).",
        a={"kind": "atop"},
        b={"kind": "at"},
        metric="clean",
        why_not="no AT defense next to AToP",
    ),
    ClaimSpec(
        "rt2_best",
        "RT2 (noise + mask) is the best random transform for AToP.",
        a={"kind": "atop", "rt": "rt2"},
        b={"kind": "atop", "rt": ("rt1", "rt3")},
        same=("purifier",),
        why_not="AToP was not run with RT2 and another RT on the same purifier",
    ),
    ClaimSpec(
        "gan_over_ae",
        "The GAN purifier is more robust than the AE purifier (same RT and FT).",
        a={"kind": ("ap", "atop"), "purifier": "gan"},
        b={"purifier": "ae"},
        same=("kind", "rt"),
        why_not="the run has no GAN / AE pair",
    ),
    ClaimSpec(
        "classifier_only_overstates",
        "Attacks on the classifier only (BPDA) overstate robustness: full-gradient attacks on the whole system are stronger.",
        a={},
        metric="gradient",
        why_not="no classifier-only (BPDA) result next to a full-gradient one",
    ),
)


def _has(setting: Mapping, wanted: Mapping[str, object]) -> bool:
    for key, value in wanted.items():
        allowed = value if isinstance(value, tuple) else (value,)
        if setting[key] not in allowed:
            return False
    return True


def _shared(a: Mapping, b: Mapping, key: str) -> bool:
    missing_a, missing_b = _missing(a[key]), _missing(b[key])
    return (missing_a and missing_b) or (not missing_a and not missing_b and a[key] == b[key])


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def matches(spec: ClaimSpec, a: Mapping, b: Mapping) -> bool:
    """Whether defense settings ``a`` and ``b`` (kind, purifier, rt, ...) form one of the claim's pairs."""
    return _has(a, spec.a) and _has(b, spec.b) and all(_shared(a, b, key) for key in spec.same)


def user_claims(entries) -> tuple[ClaimSpec, ...]:
    """The config's ``verdicts.claims`` entries as claims: defense ``a`` beats defense ``b`` (by name)."""
    return tuple(
        ClaimSpec(
            entry["key"],
            entry["statement"],
            a={"defense": entry["a"]},
            b={"defense": entry["b"]},
            metric=entry.get("metric", "robust"),
            attacks=UNSEEN if entry.get("attacks", "any") == "unseen" else ANY_ATTACK,
            why_not=f"{entry['a']} and {entry['b']} have no results on a common attack",
        )
        for entry in entries
    )
