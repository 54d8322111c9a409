"""Paired tests on per-image outcomes: two accuracies measured on the same images.

Every defense and attack is scored on the same seeded test images, so two
accuracies are compared image by image rather than by whether two 95 %
intervals overlap (which needs a much larger gap to say anything). Outcomes
are per-image fractions of draws classified right: 0/1 for a deterministic
model (where the sign test below is exactly McNemar's test), any value in
[0, 1] for a randomized one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np


def binomtest(*args, **kwargs):
    """scipy.stats.binomtest, imported on first use: scipy.stats costs ~0.5 s of start-up, and the
    evaluation jobs import this module (Wilson intervals) without testing anything."""
    from scipy.stats import binomtest as scipy_binomtest

    return scipy_binomtest(*args, **kwargs)


ALTERNATIVES = ("two-sided", "greater", "less")


@dataclass(frozen=True)
class PairedTest:
    """``a_better``: images where a scored higher than b; ``b_better`` the reverse; ties carry no information."""

    a_better: int
    b_better: int
    ties: int
    p_value: float
    alternative: str
    mean_difference: float  # mean over images of a - b

    @property
    def discordant(self) -> int:
        return self.a_better + self.b_better

    def text(self) -> str:
        return (
            f"{self.a_better} images higher, {self.b_better} lower, {self.ties} tied; "
            f"mean difference {self.mean_difference:+.4f}, p = {self.p_value:.3g} ({self.alternative})"
        )


def _pair(a: Sequence[float], b: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired outcomes need two 1-D arrays of the same length, got {a.shape} and {b.shape}")
    if a.size == 0:
        raise ValueError("paired outcomes are empty: no image was scored by both")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("paired outcomes must be finite")
    return a, b


def _check_alternative(alternative: str) -> None:
    if alternative not in ALTERNATIVES:
        raise ValueError(f"alternative must be one of {', '.join(ALTERNATIVES)}, got {alternative!r}")


def sign_test(a: Sequence[float], b: Sequence[float], alternative: str = "two-sided") -> PairedTest:
    """Exact sign test on paired per-image outcomes; ``greater`` tests whether a tends to exceed b.

    Under the null each untied image is equally likely to favour a or b, so the
    number favouring a is Binomial(discordant, 1/2). On 0/1 outcomes this is
    the exact McNemar test.
    """
    _check_alternative(alternative)
    a, b = _pair(a, b)
    a_better, b_better = int((a > b).sum()), int((a < b).sum())
    ties = a.size - a_better - b_better
    discordant = a_better + b_better
    p = 1.0 if discordant == 0 else binomtest(a_better, discordant, 0.5, alternative=alternative).pvalue
    return PairedTest(a_better, b_better, ties, float(p), alternative, float((a - b).mean()))


def mcnemar_exact(a_correct: Sequence[bool], b_correct: Sequence[bool], alternative: str = "two-sided") -> PairedTest:
    """Exact McNemar test on per-image right/wrong outcomes (e.g. all-draws-correct, or one draw)."""
    a, b = np.asarray(a_correct), np.asarray(b_correct)
    if a.dtype != bool or b.dtype != bool:
        raise ValueError("McNemar's test takes boolean per-image outcomes; use sign_test for fractions")
    return sign_test(a.astype(float), b.astype(float), alternative)


def paired_bootstrap(
    a: Sequence[float], b: Sequence[float], resamples: int = 2000, seed: int = 0, confidence: float = 0.95
) -> tuple[float, float, float]:
    """Mean of a - b with a percentile bootstrap interval that resamples images (pairs kept together)."""
    a, b = _pair(a, b)
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    difference = a - b
    rng = np.random.default_rng(seed)
    means = difference[resample_units(rng, resamples, difference.size)].mean(axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(difference.mean()), float(low), float(high)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (family-wise error control), in the input order."""
    p = np.asarray(p_values, dtype=float)
    if p.size and ((p < 0) | (p > 1) | ~np.isfinite(p)).any():
        raise ValueError("p-values must lie in [0, 1]")
    order = np.argsort(p, kind="stable")
    adjusted = np.empty_like(p)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (p.size - rank) * p[i]))
        adjusted[i] = running
    return adjusted.tolist()


def upper_bound_below(successes: int, n: int, ceiling: float, alpha: float = 0.05) -> tuple[bool, float]:
    """One-sided exact binomial test of p >= ceiling: (rejected at ``alpha``, its p-value).

    Rejecting means the accuracy is demonstrably below ``ceiling``; equivalently the
    one-sided Clopper-Pearson upper bound lies below it.
    """
    if n <= 0:
        return False, 1.0
    p = binomtest(int(successes), n, ceiling, alternative="less").pvalue
    return bool(p < alpha), float(p)


def aligned(indices_a: Sequence[int], values_a: Sequence[float], indices_b: Sequence[int], values_b: Sequence[float]):
    """Per-image outcomes of two results on the images both scored: (indices, a, b)."""
    by_index_b = dict(zip(indices_b, values_b, strict=True))
    common = [(i, v) for i, v in zip(indices_a, values_a, strict=True) if i in by_index_b]
    return [i for i, _ in common], [v for _, v in common], [by_index_b[i] for i, _ in common]


def all_draws_right(fractions) -> np.ndarray:
    """Per image: right on every draw of every attack (the worst case over draws an attacker who resubmits sees).

    ``fractions`` is (images,) or (attacks, images) of per-image fractions of draws right.
    """
    fractions = np.atleast_2d(np.asarray(fractions, dtype=float))
    return fractions.min(axis=0) >= 1 - 1e-9


def detectable_difference(discordant: int, n: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest accuracy difference McNemar's test detects with ``power`` at two-sided ``alpha``.

    Normal approximation (z_{1-alpha/2} + z_power) * sqrt(d / n) with d = discordant / n the
    observed discordance rate, but never below the smallest one-sided split the exact test can
    call significant (with no discordant image the formula says 0, yet 6 of 6 are needed at 5 %).
    """
    if n <= 0 or not 0 <= discordant <= n:
        raise ValueError(f"detectable difference needs 0 <= discordant <= n and n > 0, got {discordant} of {n}")
    z = NormalDist().inv_cdf(1 - alpha / 2) + NormalDist().inv_cdf(power)
    smallest = next(m for m in range(1, n + 2) if m > n or 2 * 0.5**m < alpha)
    return max(z * float(np.sqrt(discordant / n / n)), smallest / n)


@dataclass(frozen=True)
class BootstrapDifference:
    """Mean of a - b over images, its percentile interval and the two-sided bootstrap p-value of no difference."""

    difference: float
    low: float
    high: float
    p_value: float
    resamples: int


def _group_sizes(groups, n: int) -> tuple[np.ndarray, int]:
    """Start of each group's units and the common group size (units sorted by group, equal sizes)."""
    groups = np.asarray(groups)
    if groups.shape != (n,):
        raise ValueError(f"groups must label each of the {n} units, got {groups.shape}")
    labels, starts, counts = np.unique(groups, return_index=True, return_counts=True)
    if (counts != counts[0]).any():
        raise ValueError(f"every group needs the same number of units, got {dict(zip(labels.tolist(), counts))}")
    order = np.argsort(groups, kind="stable")
    if (order != np.arange(n)).any():
        raise ValueError("units must be sorted by group")
    return np.sort(starts), int(counts[0])


def resample_units(rng: np.random.Generator, size: int, n: int, groups=None) -> np.ndarray:
    """(size, n) unit indices: images with replacement, or (hierarchical) groups then images within each.

    With ``groups`` (e.g. the training seed of each unit), each resample draws as many groups as there
    are, with replacement, and then each drawn group's units with replacement: the bootstrap over
    seeds and images of a nested design (Davison & Hinkley 1997, section 3.8), so the spread between
    training seeds counts as well as the images'.
    """
    if groups is None or len(set(np.asarray(groups).tolist())) < 2:
        return rng.integers(0, n, size=(size, n))
    starts, per_group = _group_sizes(groups, n)
    chosen = starts[rng.integers(0, len(starts), size=(size, len(starts)))]
    within = rng.integers(0, per_group, size=(size, len(starts), per_group))
    return (chosen[:, :, None] + within).reshape(size, n)


def bootstrap_mean_interval(
    values, groups=None, resamples: int = 2000, seed: int = 0, confidence: float = 0.95
) -> tuple[float, float]:
    """Percentile interval of the mean of per-unit values, resampling seeds then images when ``groups`` is given."""
    values = np.asarray(values, dtype=float)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"values must be a non-empty 1-D array, got shape {values.shape}")
    rng = np.random.default_rng(seed)
    means = values[resample_units(rng, resamples, values.size, groups)].mean(axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(low), float(high)


def paired_draw_bootstrap(
    a,
    b,
    draws_a: int,
    draws_b: int,
    resamples: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
    groups=None,
) -> BootstrapDifference:
    """Difference of draw-mean accuracies, resampling images (pairs together) and the draws within each image.

    With ``groups`` (the training seed of each image's outcome, units sorted by seed, the same
    number per seed) the bootstrap is hierarchical: seeds with replacement, then images within each
    drawn seed, then draws (see ``resample_units``).

    ``a`` and ``b`` hold per-image fractions of ``draws_a`` / ``draws_b`` draws right, as (images,)
    or (attacks, images); an image's outcome is its lowest fraction over the attacks (the per-image
    worst case over attacks). Resampling an image's draws with replacement is drawing
    Binomial(draws, fraction) right ones, so the stored fractions suffice; each attack's draws
    are resampled separately. The p-value of no difference is the normal one from the bootstrap
    standard error (a share of resamples could not go below 1 / resamples, too coarse for Holm's
    correction over a report's comparisons).
    """
    a = np.atleast_2d(np.asarray(a, dtype=float))
    b = np.atleast_2d(np.asarray(b, dtype=float))
    _pair(a.min(axis=0), b.min(axis=0))
    if min(draws_a, draws_b) < 1 or resamples < 1:
        raise ValueError(f"draws and resamples must be at least 1, got {draws_a}, {draws_b}, {resamples}")
    if ((a < 0) | (a > 1) | (b < 0) | (b > 1)).any():
        raise ValueError("per-image fractions of draws must lie in [0, 1]")
    n = a.shape[1]
    rng = np.random.default_rng(seed)
    # bounded memory: images x attacks x resamples can reach 10^8 on the paper's 10k-image presets
    chunk = max(1, 4_000_000 // (n * max(a.shape[0], b.shape[0])))
    means = []
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        images = resample_units(rng, size, n, groups)
        worst_a = (rng.binomial(draws_a, a[:, images]) / draws_a).min(axis=0)
        worst_b = (rng.binomial(draws_b, b[:, images]) / draws_b).min(axis=0)
        means.append((worst_a - worst_b).mean(axis=1))
    means = np.concatenate(means)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    difference = float((a.min(axis=0) - b.min(axis=0)).mean())
    spread = float(means.std(ddof=1)) if resamples > 1 else 0.0
    if spread > 0:
        p = 2 * NormalDist().cdf(-abs(difference) / spread)
    else:  # every resample gave the same difference: no noise at all
        p = 1.0 if difference == 0 else 0.0
    return BootstrapDifference(difference, float(low), float(high), float(p), resamples)


def wilson_interval(successes: float, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95 % Wilson score interval for a binomial proportion."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    low = 0.0 if successes <= 0 else max(0.0, centre - half)
    high = 1.0 if successes >= n else min(1.0, centre + half)
    return (low, high)
