"""Defense names -> what each defense is built from. Torch-free: the Snakefile reads it.

A defense name is a kind, optionally followed by ``-<purifier variant>``:
``standard`` (the classifier alone), ``at`` (the adversarially trained classifier
alone), ``ap-<variant>`` (RT + the variant's pre-trained purifier) and
``atop-<variant>`` (RT + its fine-tuned purifier). Bare ``ap`` / ``atop`` name the
experiment's only purifier variant.
"""

from __future__ import annotations

from dataclasses import dataclass

from .registry import Registry


@dataclass(frozen=True)
class DefenseKind:
    classifier: str  # which classifier checkpoint: "standard" or "adversarial"
    purifier_stage: str | None  # which purifier checkpoint the defense puts in front, if any
    description: str


# Checkpoint stages each classifier role accepts (a provided RobustBench Standard file is standard).
CLASSIFIER_STAGES = {"standard": ("trained", "provided"), "adversarial": ("adversarially_trained",)}

DEFENSES: Registry = Registry("defense")
DEFENSES.register("standard")(DefenseKind("standard", None, "classifier alone"))
DEFENSES.register("at")(DefenseKind("adversarial", None, "adversarially trained classifier alone (PGD AT)"))
DEFENSES.register("ap")(DefenseKind("standard", "pretrained", "RT + pre-trained purifier (adversarial purification)"))
DEFENSES.register("atop")(DefenseKind("standard", "finetuned", "RT + fine-tuned purifier (AToP)"))


def split_defense(name: str) -> tuple[str, str | None]:
    """``atop-gan-rt2`` -> ``("atop", "gan-rt2")``; ``at`` -> ``("at", None)``; unknown kinds raise."""
    kind, _, variant = name.partition("-")
    entry = DEFENSES[kind]
    if variant and entry.purifier_stage is None:
        raise KeyError(f"defense {name!r}: {kind!r} has no purifier, so it takes no variant")
    return kind, variant or None
