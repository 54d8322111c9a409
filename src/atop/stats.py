"""Statistics of the verdicts: paired tests on the same images, and tests across training seeds.

Two questions are asked of every comparison (docs/verdicts.md):

- *These trained models* (conditional on the checkpoints): image-level paired tests. Every
  defense and attack is scored on the same seeded test images, so two accuracies are compared
  image by image: the exact sign test (McNemar's on 0/1 outcomes) and a bootstrap over images for
  the interval. With several training seeds scored on the same images, the image is the cluster:
  the sign test runs on each image's seed-averaged difference and the bootstrap resamples images
  for every seed at once (never seeds-then-images, never draws on top of images).
- *The method* (training seeds are the unit): a crossed random-effects model of per-(seed, image)
  differences, y_si = mu + a_s + b_i + e_si, gives the variance of the grand mean from the mean
  squares, Var = (MS_seed + max(MS_image - MS_resid, 0)) / (S n), on S - 1 degrees of freedom
  (conservative when the image term is large): the spread between training runs always counts, and the spread between images counts
  as far as it is there (with shared images it is common to every seed). With one seed the
  method is undecided.

Every rule here is checked by seeded simulations in tests/test_calibration.py (type-I error at
most 5 %, coverage at least 95 %, within Monte Carlo error).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

ALTERNATIVES = ("two-sided", "greater", "less")
ALL_RIGHT = 1 - 1e-9  # a fraction of draws this close to 1 is "right on every draw"


def binomtest(*args, **kwargs):
    """scipy.stats.binomtest, imported on first use: scipy.stats costs ~0.5 s of start-up, and the
    evaluation jobs import this module (Wilson intervals) without testing anything."""
    from scipy.stats import binomtest as scipy_binomtest

    return scipy_binomtest(*args, **kwargs)


def _student_t():
    from scipy.stats import t

    return t


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


def clustered_sign_test(a, b) -> PairedTest:
    """Sign test with the image as the unit: ``a``, ``b`` are (seeds, images) outcomes on shared images.

    Each image's difference is averaged over the seeds first, so an image that several seeds
    share counts once (summing discordant pairs over seeds instead counts it S times and rejects
    a true null 17 % of the time at 5 % with 3 seeds). One seed: the plain sign test.
    """
    a, b = np.atleast_2d(np.asarray(a, dtype=float)), np.atleast_2d(np.asarray(b, dtype=float))
    if a.shape != b.shape:
        raise ValueError(f"paired outcomes need the same (seeds, images) shape, got {a.shape} and {b.shape}")
    difference = (a - b).mean(axis=0)
    return sign_test(difference, np.zeros_like(difference))


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
    """Per image (and per attack when given (attacks, images)): right on every draw."""
    return np.asarray(fractions, dtype=float) >= ALL_RIGHT


# ------------------------------------------------------------------ worst case over attacks


def weakest(outcomes) -> tuple[np.ndarray, np.ndarray]:
    """Per seed, the attack with the lowest mean outcome, and its per-image outcomes.

    ``outcomes`` is (seeds, attacks, images); returns (chosen attack per seed, (seeds, images)).
    The worst case over attacks is the accuracy under the defense's strongest attack: the lowest
    of the per-attack accuracies. Taking each image's minimum over attacks instead is AutoAttack's
    rule for deterministic models, but on a randomized defense it is the minimum of noisy
    fractions, biased low (true rate 0.5 per image, 4 draws: 0.36 / 0.30 / 0.25 expected over
    2 / 3 / 4 attacks), a handicap a deterministic defense never pays.
    """
    outcomes = np.asarray(outcomes, dtype=float)
    if outcomes.ndim != 3 or 0 in outcomes.shape:
        raise ValueError(f"outcomes must be a non-empty (seeds, attacks, images) array, got shape {outcomes.shape}")
    chosen = outcomes.mean(axis=2).argmin(axis=1)
    return chosen, outcomes[np.arange(outcomes.shape[0]), chosen]


def combine(outcomes, how: str) -> np.ndarray:
    """(seeds, attacks, images) -> (seeds, images): the ``weakest`` attack, or the ``average`` of replicates
    (clean accuracy: every result file re-scores the same clean images on its own draws)."""
    outcomes = np.asarray(outcomes, dtype=float)
    if how == "weakest":
        return weakest(outcomes)[1]
    if how == "average":
        return outcomes.mean(axis=1)
    raise ValueError(f"combine takes 'weakest' or 'average', got {how!r}")


# ------------------------------------------------------------------ the image bootstrap


@dataclass(frozen=True)
class Interval:
    """An estimate with its ``confidence`` interval."""

    estimate: float
    low: float
    high: float
    confidence: float = 0.95

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high


def _bootstrap_weights(rng: np.random.Generator, resamples: int, n: int) -> np.ndarray:
    """(resamples, n) counts of each image in a resample of n images drawn with replacement."""
    return rng.multinomial(n, np.full(n, 1.0 / n), size=resamples).astype(np.float32)


def _resampled(outcomes: np.ndarray, weights: np.ndarray, how: str) -> np.ndarray:
    """(resamples,) the statistic mean over seeds of ``combine(outcomes, how)`` on each resample of images."""
    means = np.einsum("ski,ri->rsk", outcomes.astype(np.float32), weights) / weights.shape[1]
    per_seed = means.min(axis=2) if how == "weakest" else means.mean(axis=2)
    return per_seed.mean(axis=1).astype(float)


def image_bootstrap(
    a,
    b=None,
    how_a: str = "weakest",
    how_b: str | None = None,
    resamples: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> Interval:
    """Bootstrap interval over images of a defense's accuracy, or of a - b with ``b`` (pairs kept together).

    ``a`` and ``b`` are (seeds, attacks, images) outcomes on the same images; every resample draws
    images with replacement, the same images for every seed, attack and defense, and recomputes
    the worst case over attacks (``weakest``) or the average over replicates. Draws are never
    resampled on top: an image's stored fraction already carries its draw noise.
    """
    a = np.asarray(a, dtype=float)
    if a.ndim != 3 or 0 in a.shape:
        raise ValueError(f"outcomes must be a non-empty (seeds, attacks, images) array, got shape {a.shape}")
    if b is not None:
        b = np.asarray(b, dtype=float)
        if b.ndim != 3 or b.shape[0] != a.shape[0] or b.shape[2] != a.shape[2]:
            raise ValueError(f"paired outcomes need the same seeds and images, got {a.shape} and {b.shape}")
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    how_b = how_b or how_a
    estimate = float(combine(a, how_a).mean())
    if b is not None:
        estimate -= float(combine(b, how_b).mean())
    rng = np.random.default_rng(seed)
    n = a.shape[2]
    chunk = max(1, 20_000_000 // (n * a.shape[0] * max(a.shape[1], 1 if b is None else b.shape[1])))
    stats = []
    for start in range(0, resamples, chunk):
        weights = _bootstrap_weights(rng, min(chunk, resamples - start), n)
        value = _resampled(a, weights, how_a)
        if b is not None:
            value = value - _resampled(b, weights, how_b)
        stats.append(value)
    stats = np.concatenate(stats)
    tail = (1 - confidence) / 2
    low, high = (float(q) for q in np.quantile(stats, [tail, 1 - tail]))
    # The hull of the percentile [low, high] and basic [2T - high, 2T - low] intervals. A worst case
    # over attacks is a minimum: the estimate and its bootstrap replicates are biased low by about the
    # same amount, which the basic interval corrects and the percentile one doubles (simulated, the
    # lowest of 3 equally strong attacks: percentile coverage 88 %, basic 94 %; of a difference,
    # percentile 96 %, basic 92 %). The hull covers in both and always contains the estimate.
    return Interval(estimate, min(low, 2 * estimate - high), max(high, 2 * estimate - low), confidence)


# ------------------------------------------------------------------ the method: seeds as the unit


@dataclass(frozen=True)
class SeedTest:
    """Mean of per-(seed, image) values with seeds and images as crossed random effects.

    ``se`` is the standard error of the grand mean; ``df`` = seeds - 1;
    the variance components let power be projected to another number of seeds.
    """

    mean: float
    se: float
    df: float
    p_value: float  # two-sided, of mean == null
    low: float
    high: float
    seeds: int
    images: int
    seed_variance: float  # sigma_seed^2 (between training runs)
    image_variance: float  # sigma_image^2 (between images, shared by the seeds)
    residual_variance: float
    seed_means: tuple[float, ...]

    @property
    def seed_sd(self) -> float:
        return float(np.std(self.seed_means, ddof=1)) if self.seeds > 1 else math.nan

    def projected_se(self, seeds: int) -> float:
        """Standard error with ``seeds`` training seeds on the same number of images."""
        return math.sqrt(
            self.seed_variance / seeds
            + self.image_variance / self.images
            + self.residual_variance / (seeds * self.images)
        )

    def power(self, effect: float, seeds: int | None = None, alpha: float = 0.05) -> float:
        """Power of the two-sided test at ``alpha`` against a true mean difference ``effect`` (noncentral t)."""
        from scipy.stats import nct

        seeds = seeds or self.seeds
        if seeds < 2:
            return 0.0  # one training run cannot test a method
        se = self.projected_se(seeds)
        if se == 0:
            return 1.0 if effect != 0 else alpha
        df = float(seeds - 1)
        critical = _student_t().ppf(1 - alpha / 2, df)
        shift = effect / se
        return float(nct.sf(critical, df, shift) + nct.cdf(-critical, df, shift))

    def seeds_for_power(self, effect: float, power: float = 0.8, alpha: float = 0.05, most: int = 64) -> int | None:
        """The fewest seeds that reach ``power`` at ``effect`` (None: not within ``most``)."""
        return next((s for s in range(2, most + 1) if self.power(effect, s, alpha) >= power), None)


def seed_test(values, null: float = 0.0, confidence: float = 0.95) -> SeedTest:
    """Crossed random-effects inference on (seeds, images) values, e.g. per-image differences a - b.

    The seed is the unit of the method: with S seeds on the same n images, the variance of the
    grand mean is sigma_seed^2 / S + sigma_image^2 / n + sigma_e^2 / (S n), estimated from the two-way
    mean squares; the image term is dropped where its estimate is negative, which leaves the
    paired t-test on per-seed means.
    """
    y = np.asarray(values, dtype=float)
    if y.ndim != 2 or y.shape[1] < 2:
        raise ValueError(f"seed_test needs (seeds, images) values with at least 2 images, got shape {y.shape}")
    seeds, images = y.shape
    if seeds < 2:
        raise ValueError("a method-level test needs at least 2 training seeds: one seed is one training run")
    if not np.isfinite(y).all():
        raise ValueError("seed_test values must be finite")
    grand = float(y.mean())
    seed_means, image_means = y.mean(axis=1), y.mean(axis=0)
    ms_seed = images * float(((seed_means - grand) ** 2).sum()) / (seeds - 1)
    ms_image = seeds * float(((image_means - grand) ** 2).sum()) / (images - 1)
    residual = y - seed_means[:, None] - image_means[None, :] + grand
    ms_resid = float((residual**2).sum()) / ((seeds - 1) * (images - 1))
    image_term = max(ms_image - ms_resid, 0.0)
    variance = (ms_seed + image_term) / (seeds * images)
    # S - 1 degrees of freedom, not Satterthwaite's: with few seeds the estimated df grows exactly when
    # MS_seed is small by chance, and rejected a true null 13 % of the time at 5 % with 2 seeds (simulated)
    df = float(seeds - 1)
    se = math.sqrt(variance)
    t = _student_t()
    half = float(t.ppf(0.5 + confidence / 2, df)) * se
    if se > 0:
        p = float(2 * t.sf(abs(grand - null) / se, df))
    else:
        p = 1.0 if grand == null else 0.0
    return SeedTest(
        mean=grand,
        se=se,
        df=float(df),
        p_value=min(1.0, p),
        low=grand - half,
        high=grand + half,
        seeds=seeds,
        images=images,
        seed_variance=max((ms_seed - ms_resid) / images, 0.0),
        image_variance=image_term / seeds,
        residual_variance=ms_resid,
        seed_means=tuple(float(m) for m in seed_means),
    )


# ------------------------------------------------------------------ sizes, equivalence, intervals


def detectable_difference(differences, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest mean difference the image-level sign test detects with ``power`` at two-sided ``alpha``.

    ``differences`` are the per-image (seed-averaged) differences a - b; pass ``alpha`` at the
    Holm family's most stringent level (alpha / comparisons) when the test is one of a family.
    Normal approximation (z_{1-alpha/2} + z_power) * sqrt(mean(d^2) / n), which for 0/1 outcomes is
    McNemar's sqrt(discordant) / n, but never below the smallest one-sided split the exact test can
    call significant (with no discordant image the formula says 0, yet 6 of 6 are needed at 5 %).
    """
    d = np.asarray(differences, dtype=float)
    if d.ndim != 1 or d.size == 0 or not np.isfinite(d).all():
        raise ValueError(f"detectable difference needs finite per-image differences, got shape {d.shape}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    n = d.size
    z = NormalDist().inv_cdf(1 - alpha / 2) + NormalDist().inv_cdf(power)
    smallest = next((m for m in range(1, n + 1) if 2 * 0.5**m < alpha), n + 1)
    return max(z * math.sqrt(float((d**2).mean()) / n), smallest / n)


@dataclass(frozen=True)
class Equivalence:
    """Two one-sided tests: is the run within ``margin`` of a published number?"""

    difference: float  # run - reference
    low: float  # the 1 - 2 alpha interval of the difference
    high: float
    margin: float
    verdict: str  # "equivalent", "different" or "undecided"


def equivalence(estimate: float, low90: float, high90: float, reference: float, margin: float) -> Equivalence:
    """Two one-sided tests at 5 % each: equivalent when the run's 90 % interval lies inside
    reference +- margin; different when it lies wholly outside that band; otherwise undecided.

    More images narrow the interval and make equivalence easier to show, never harder; fewer images
    leave it undecided instead of "reproduced".
    """
    if not 0 < margin < 1:
        raise ValueError(f"equivalence margin must lie in (0, 1) (a fraction), got {margin}")
    lo, hi = low90 - reference, high90 - reference
    if -margin < lo and hi < margin:
        verdict = "equivalent"
    elif lo > margin or hi < -margin:
        verdict = "different"
    else:
        verdict = "undecided"
    return Equivalence(estimate - reference, lo, hi, margin, verdict)


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


def wilson_interval_cc(successes: float, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95 % Wilson score interval with continuity correction (Newcombe 1998, method 4): conservative,
    so it keeps its coverage at small n where the plain score interval dips below 95 %."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    denominator = 2 * (n + z * z)
    low = 0.0
    if p > 0:
        low = (
            2 * n * p + z * z - 1 - z * math.sqrt(max(z * z - 2 - 1 / n + 4 * p * (n * (1 - p) + 1), 0))
        ) / denominator
    high = 1.0
    if p < 1:
        high = (
            2 * n * p + z * z + 1 + z * math.sqrt(max(z * z + 2 - 1 / n + 4 * p * (n * (1 - p) - 1), 0))
        ) / denominator
    return (max(0.0, low), min(1.0, high))


def difference_interval(p1: float, n1: int, p2: float, n2: int) -> tuple[float, float]:
    """95 % interval for p1 - p2 of two independent proportions: Newcombe's square-and-add of the
    continuity-corrected Wilson intervals (method 11). A proportion may be a mean of per-image fractions
    in [0, 1] (draws of a randomized defense): their variance is at most p (1 - p), so it stays conservative."""
    l1, u1 = wilson_interval_cc(p1 * n1, n1)
    l2, u2 = wilson_interval_cc(p2 * n2, n2)
    d = p1 - p2
    return (d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2), d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2))
