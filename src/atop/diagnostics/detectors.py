"""Overfitting detectors on a stage's monitored curve (torch-free: the report reads them).

The curve's columns come from the training stages' overfitting monitor (src/atop/train/monitor.py);
minimum sizes are ``diagnostics.overfitting``:

- catastrophic overfitting (Kim, Lee & Lee, "Understanding catastrophic overfitting in single-step
  adversarial training", AAAI 2021): an epoch whose FGSM accuracy rose over the epoch before (by at
  least ``fgsm_rise``) while its PGD accuracy fell over it (by at least ``pgd_drop``), both
  significantly; checked on the training and on the validation batch;
- robust overfitting (Rice, Wong & Kolter, "Overfitting in adversarially robust deep learning",
  ICML 2020): the last epoch's validation PGD accuracy is significantly, and at least ``robust_drop``,
  below its best epoch's while the training PGD accuracy rose after that epoch by more than ``train_rise``.

A curve's monitor columns are accuracies on fixed images (``{split}_images`` of them, the same
images every epoch), so every decision is a test on counts, with its false-alarm rate stated:

- an accuracy difference between two epochs is tested with Fisher's exact test, one-sided. The
  two epochs score the same images, and their outcomes are positively correlated (the same easy and hard
  images), which makes the unpaired test conservative;
- selection is paid for: robust overfitting compares the best epoch, chosen among E - 1 earlier ones,
  with the last (Bonferroni factor E - 1); catastrophic overfitting looks at every epoch on both
  batches, and at each epoch either the FGSM rise or the PGD fall is a null when there is no
  overfitting, so each test runs at alpha / (2 (E - 1));
- the configured changes (``fgsm_rise``, ``pgd_drop``, ``robust_drop``) are minimum sizes on top of
  the test, compared in whole images so an exact threshold counts (0.85 -> 0.80 of 20 images is a
  drop of 0.05, not 0.0499...).

tests/test_overfitting.py simulates curves without overfitting at the default sizes and 30 epochs
and checks each detector's false-alarm rate stays at most ``alpha``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

SPLITS = ("train", "val")
MONITORED = ("clean", "fgsm", "pgd")  # what the overfitting monitor scores, per split
COLUMNS = tuple(f"{split}_{attack}" for split in SPLITS for attack in MONITORED)
# The monitor writes the number of fixed images per split next to the accuracies.
IMAGE_COLUMNS = {split: f"{split}_images" for split in SPLITS}
TOLERANCE = 1e-9  # a change this close to a threshold (in images) meets it


@lru_cache(maxsize=65536)
def fisher_greater(k_high: int, n_high: int, k_low: int, n_low: int) -> float:
    """One-sided Fisher exact p-value that the first proportion is above the second."""
    from scipy.stats import hypergeom

    if n_high <= 0 or n_low <= 0:
        return 1.0
    # k_high successes among the first n_high, given k_high + k_low successes in n_high + n_low
    return float(min(1.0, hypergeom.sf(k_high - 1, n_high + n_low, k_high + k_low, n_high)))


def _counts(rows: Sequence[dict], split: str, attack: str) -> tuple[list[int], int] | None:
    """The column as whole images and the batch size; None where the curve does not monitor it."""
    values = [row.get(f"{split}_{attack}") for row in rows]
    sizes = {row.get(IMAGE_COLUMNS[split]) for row in rows}
    if not values or any(v is None or (isinstance(v, float) and math.isnan(v)) for v in values):
        return None
    if len(sizes) != 1 or None in sizes or (isinstance(next(iter(sizes)), float) and math.isnan(next(iter(sizes)))):
        return None  # without the number of images no change can be tested
    n = int(next(iter(sizes)))
    if n <= 0:
        return None
    return [round(float(v) * n) for v in values], n


def _at_least(change: int, threshold: float, n: int) -> bool:
    return change >= threshold * n - TOLERANCE


def _epoch(rows: Sequence[dict], i: int) -> int:
    return int(rows[i].get("epoch", i + 1))


def catastrophic_overfitting(
    rows: Sequence[dict], fgsm_rise: float, pgd_drop: float, split: str = "train", alpha: float = 0.05
) -> dict:
    """Epochs where ``{split}_fgsm`` rose over the epoch before while ``{split}_pgd`` fell over it, both
    significantly (one-sided Fisher at alpha / (2 (E - 1)): this split's half of the stage's family)
    and by at least ``fgsm_rise`` / ``pgd_drop`` (Kim, Lee & Lee 2021: the FGSM accuracy jumps as the
    PGD accuracy collapses)."""
    if fgsm_rise <= 0 or pgd_drop <= 0:
        raise ValueError(f"fgsm_rise ({fgsm_rise}) and pgd_drop ({pgd_drop}) must be positive")
    fgsm, pgd = _counts(rows, split, "fgsm"), _counts(rows, split, "pgd")
    if fgsm is None or pgd is None:
        return {"split": split, "monitored": False, "detected": False, "epochs": []}
    (fgsm, n), (pgd, _) = fgsm, pgd
    level = alpha / (len(SPLITS) * max(len(rows) - 1, 1))
    epochs = [
        _epoch(rows, i)
        for i in range(1, len(rows))
        if _at_least(fgsm[i] - fgsm[i - 1], fgsm_rise, n)
        and _at_least(pgd[i - 1] - pgd[i], pgd_drop, n)
        and fisher_greater(fgsm[i], n, fgsm[i - 1], n) <= level
        and fisher_greater(pgd[i - 1], n, pgd[i], n) <= level
    ]
    return {"split": split, "monitored": True, "detected": bool(epochs), "epochs": epochs, "images": n, "level": level}


def robust_overfitting(rows: Sequence[dict], robust_drop: float, train_rise: float, alpha: float = 0.05) -> dict:
    """Validation PGD accuracy fell from its best epoch to the last, significantly (one-sided Fisher,
    Bonferroni over the E - 1 epochs the best is chosen from) and by at least ``robust_drop``, while
    training PGD accuracy rose by more than ``train_rise`` over the same epochs (Rice et al. 2020)."""
    if robust_drop <= 0 or train_rise < 0:
        raise ValueError(f"robust_drop ({robust_drop}) must be positive and train_rise ({train_rise}) >= 0")
    val, train = _counts(rows, "val", "pgd"), _counts(rows, "train", "pgd")
    if val is None or train is None:
        return {"monitored": False, "detected": False}
    (val, n_val), (train, n_train) = val, train
    best = max(range(len(val)), key=lambda i: (val[i], -i))  # the earliest best
    drop, rise = val[best] - val[-1], train[-1] - train[best]
    comparisons = max(len(val) - 1, 1)
    p_value = min(1.0, comparisons * fisher_greater(val[best], n_val, val[-1], n_val)) if drop > 0 else 1.0
    return {
        "monitored": True,
        "detected": p_value <= alpha
        and _at_least(drop, robust_drop, n_val)
        and rise > train_rise * n_train + TOLERANCE,
        "best_epoch": _epoch(rows, best),
        "val_pgd_drop": drop / n_val,
        "train_pgd_rise": rise / n_train,
        "p_value": p_value,
        "images": n_val,
        "detectable_drop": detectable_drop(val[best], n_val, comparisons, alpha),
    }


def detectable_drop(best: int, n: int, comparisons: int, alpha: float) -> float | None:
    """The smallest fall from ``best`` of ``n`` images the robust-overfitting test would call significant
    (None: not even a fall to 0)."""
    for last in range(best - 1, -1, -1):
        if comparisons * fisher_greater(best, n, last, n) <= alpha:
            return (best - last) / n
    return None


def pgd_above_fgsm(rows: Sequence[dict]) -> dict[str, list[int]]:
    """Per split, the epochs where the monitor's PGD scored above its FGSM: a PGD weaker than one FGSM
    step cannot show the gap catastrophic overfitting opens (the monitor's attack is too weak)."""
    found = {}
    for split in SPLITS:
        fgsm, pgd = _counts(rows, split, "fgsm"), _counts(rows, split, "pgd")
        if fgsm is not None and pgd is not None:
            found[split] = [_epoch(rows, i) for i, (f, p) in enumerate(zip(fgsm[0], pgd[0])) if p > f]
    return found


def overfitting_flags(rows: Sequence[dict], thresholds: dict) -> dict:
    """Both detectors on one stage's curve; ``monitored`` False where the curve has no monitor columns."""
    alpha = thresholds.get("alpha", 0.05)
    catastrophic = [
        catastrophic_overfitting(rows, thresholds["fgsm_rise"], thresholds["pgd_drop"], split, alpha)
        for split in SPLITS
    ]
    robust = robust_overfitting(rows, thresholds["robust_drop"], thresholds["train_rise"], alpha)
    return {
        "monitored": any(c["monitored"] for c in catastrophic) or robust["monitored"],
        "epochs_run": len(rows),
        "catastrophic": {
            "detected": any(c["detected"] for c in catastrophic),
            "epochs": {c["split"]: c["epochs"] for c in catastrophic if c["monitored"]},
        },
        "robust": robust,
        "pgd_above_fgsm": pgd_above_fgsm(rows),
    }
