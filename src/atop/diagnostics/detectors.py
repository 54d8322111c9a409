"""Overfitting detectors on a stage's monitored curve (torch-free: the report reads them).

See overfitting.py for the monitor that writes the columns and for the definitions' sources.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

SPLITS = ("train", "val")
ATTACKS = ("clean", "fgsm", "pgd")
COLUMNS = tuple(f"{split}_{attack}" for split in SPLITS for attack in ATTACKS)


def _series(rows: Sequence[dict], column: str) -> list[float] | None:
    values = [row.get(column) for row in rows]
    if not values or any(v is None or math.isnan(v) for v in values):  # absent or NaN: not monitored
        return None
    return [float(v) for v in values]


def catastrophic_overfitting(rows: Sequence[dict], fgsm_rise: float, pgd_drop: float, split: str = "train") -> dict:
    """Epochs where ``{split}_fgsm`` rose by >= fgsm_rise over the epoch before while ``{split}_pgd``
    fell >= pgd_drop below its best of the earlier epochs (Kim, Lee & Lee 2021)."""
    if fgsm_rise <= 0 or pgd_drop <= 0:
        raise ValueError(f"fgsm_rise ({fgsm_rise}) and pgd_drop ({pgd_drop}) must be positive")
    fgsm, pgd = _series(rows, f"{split}_fgsm"), _series(rows, f"{split}_pgd")
    if fgsm is None or pgd is None:
        return {"split": split, "monitored": False, "detected": False, "epochs": []}
    epochs = [
        int(rows[i].get("epoch", i + 1))
        for i in range(1, len(rows))
        if fgsm[i] - fgsm[i - 1] >= fgsm_rise and max(pgd[:i]) - pgd[i] >= pgd_drop
    ]
    return {"split": split, "monitored": True, "detected": bool(epochs), "epochs": epochs}


def robust_overfitting(rows: Sequence[dict], robust_drop: float, train_rise: float) -> dict:
    """Validation PGD accuracy fell >= robust_drop from its best epoch to the last while training
    PGD accuracy rose by more than train_rise over the same epochs (Rice et al. 2020)."""
    if robust_drop <= 0 or train_rise < 0:
        raise ValueError(f"robust_drop ({robust_drop}) must be positive and train_rise ({train_rise}) >= 0")
    val, train = _series(rows, "val_pgd"), _series(rows, "train_pgd")
    if val is None or train is None:
        return {"monitored": False, "detected": False}
    best = max(range(len(val)), key=lambda i: (val[i], -i))  # the earliest best
    drop, rise = val[best] - val[-1], train[-1] - train[best]
    return {
        "monitored": True,
        "detected": drop >= robust_drop and rise > train_rise,
        "best_epoch": int(rows[best].get("epoch", best + 1)),
        "val_pgd_drop": drop,
        "train_pgd_rise": rise,
    }


def overfitting_flags(rows: Sequence[dict], thresholds: dict) -> dict:
    """Both detectors on one stage's curve; ``monitored`` False where the curve has no monitor columns."""
    catastrophic = [
        catastrophic_overfitting(rows, thresholds["fgsm_rise"], thresholds["pgd_drop"], split) for split in SPLITS
    ]
    robust = robust_overfitting(rows, thresholds["robust_drop"], thresholds["train_rise"])
    return {
        "monitored": any(c["monitored"] for c in catastrophic) or robust["monitored"],
        "catastrophic": {
            "detected": any(c["detected"] for c in catastrophic),
            "epochs": {c["split"]: c["epochs"] for c in catastrophic if c["monitored"]},
        },
        "robust": robust,
    }
