"""Defense names -> what each defense is built from. Torch-free: the Snakefile reads it.

A defense name is a kind, optionally followed by ``-<purifier variant>``:
``standard`` (the classifier alone), ``at`` (the adversarially trained classifier
alone), ``ap-<variant>`` (RT + the variant's pre-trained purifier) and
``atop-<variant>`` (RT + its fine-tuned purifier), ``custom-<name>`` (a user's own defense,
built by the factory its ``custom_defenses`` entry names: custom_defenses.py). Bare ``ap`` /
``atop`` / ``custom`` name the experiment's only purifier variant / custom defense.
"""

from __future__ import annotations

from dataclasses import dataclass

from .registry import Registry


@dataclass(frozen=True)
class DefenseKind:
    classifier: str | None  # which classifier checkpoint: "standard", "adversarial"; None: its config entry says
    purifier_stage: str | None  # which purifier checkpoint the defense puts in front, if any
    description: str
    palette: str  # the report's hue family for the kind (a seaborn palette): one colour per defense everywhere
    variants_from: str | None = None  # the config section whose entries name the kind's variants (kind-<variant>)

    @property
    def finetuned(self) -> bool | None:
        """Whether the purifier in front is fine-tuned (AToP) or pre-trained (AP); None without one."""
        return None if self.purifier_stage is None else self.purifier_stage == "finetuned"


# Checkpoint stages each classifier role accepts (a provided RobustBench Standard file is standard).
CLASSIFIER_STAGES = {"standard": ("trained", "provided"), "adversarial": ("adversarially_trained",)}

# In the paper's order: the report's rows and legends follow it (KIND_ORDER); AP blues and AToP
# oranges stay apart for colour-blind readers too.
_KINDS = {
    "standard": DefenseKind("standard", None, "classifier alone", "Greys"),
    "at": DefenseKind("adversarial", None, "adversarially trained classifier alone (PGD AT)", "Purples"),
    "ap": DefenseKind(
        "standard", "pretrained", "RT + pre-trained purifier (adversarial purification)", "Blues", "purifiers"
    ),
    "atop": DefenseKind("standard", "finetuned", "RT + fine-tuned purifier (AToP)", "Oranges", "purifiers"),
    "custom": DefenseKind(None, None, "a user's own defense (custom_defenses)", "Greens", "custom_defenses"),
}
DEFENSES: Registry = Registry("defense")
for _name, _kind in _KINDS.items():
    DEFENSES.register(_name)(_kind)
KIND_ORDER: tuple[str, ...] = tuple(_KINDS)


def split_defense(name: str) -> tuple[str, str | None]:
    """``atop-gan-rt2`` -> ``("atop", "gan-rt2")``; ``at`` -> ``("at", None)``; unknown kinds raise."""
    kind, _, variant = name.partition("-")
    entry = DEFENSES[kind]
    if variant and entry.variants_from is None:
        raise KeyError(f"defense {name!r}: {kind!r} has no purifier, so it takes no variant")
    return kind, variant or None
