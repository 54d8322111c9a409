"""Paired tests on per-image outcomes: two accuracies measured on the same images.

Every defense and attack is scored on the same seeded test images, so two
accuracies are compared image by image rather than by whether two 95 %
intervals overlap (which needs a much larger gap to say anything). Outcomes
are per-image fractions of draws classified right: 0/1 for a deterministic
model (where the sign test below is exactly McNemar's test), any value in
[0, 1] for a randomized one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import binomtest

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
    means = difference[rng.integers(0, difference.size, size=(resamples, difference.size))].mean(axis=1)
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
