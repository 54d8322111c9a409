"""The numbers behind every table, figure and verdict: accuracies with their intervals, and per-image outcomes.

An :class:`Estimate` is one accuracy (draw-mean and worst case over draws) with its 95 % interval;
:class:`Outcomes` the per-image fractions of draws right the paired tests and worst cases read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..stats import (
    ALL_RIGHT,
    PairedTest,
    clustered_sign_test,
    combine,
    image_bootstrap,
    seed_test,
    weakest,
    wilson_interval,
)

RESAMPLES = 2000  # image bootstrap resamples of an interval (and of a paired comparison's)

ALL_DRAWS = "all draws"  # the worst case over draws, as tables label it
DRAW_MEAN = "draw-mean"
METRICS = (ALL_DRAWS, DRAW_MEAN)
WEAKEST = "weakest"  # robust accuracy over several attacks: the defense's strongest attack
AVERAGE = "average"  # clean accuracy over result files: each re-scores the same clean images


@dataclass(frozen=True)
class Estimate:
    """An accuracy (fraction) with its 95 % interval and where it came from.

    ``value`` is the draw-mean accuracy (one evaluation of a randomized defense, the paper's
    metric); ``all_draws`` the worst case over draws (one metric, one name in code: ``all_draws``;
    the result files' field is ``strict_accuracy``, the report's words "worst case over draws"): the share of images right on every one of the
    ``draws`` draws of one evaluation, what an attacker who may resubmit that many times faces.
    The two agree on a deterministic defense. With several training seeds (``seeds`` > 1)
    ``value`` and ``all_draws`` are means over the seeds, ``sd`` the standard deviation of the
    seeds' values, and the interval the method-level one (seeds as the unit, docs/verdicts.md).
    """

    value: float
    low: float
    high: float
    source: str = ""  # the attack behind the number; a worst case names every attack it covers
    basis: str = ""  # how a worst case was taken
    all_draws: float = math.nan
    sd: float = math.nan  # across training seeds
    seeds: int = 1

    @classmethod
    def robust(cls, row) -> Estimate | None:
        if pd.isna(row["robust_accuracy"]):
            return None
        return cls(
            row["robust_accuracy"],
            row["robust_ci95_low"],
            row["robust_ci95_high"],
            row["attack"],
            all_draws=row["robust_strict_accuracy"],
        )

    def beats(self, other: Estimate) -> bool:
        """Higher beyond noise: the two 95 % intervals do not overlap (fallback without per-image outcomes)."""
        return self.low > other.high

    def text(self) -> str:
        spread = f" ± {100 * self.sd:.1f}" if self.seeds > 1 and not math.isnan(self.sd) else ""
        bounds = "" if math.isnan(self.low) else f" [{100 * self.low:.1f}, {100 * self.high:.1f}]"
        all_draws = "" if math.isnan(self.all_draws) else f"; {ALL_DRAWS} {100 * self.all_draws:.1f}"
        return f"{100 * self.value:.1f}{spread}{bounds}{all_draws}"


@dataclass(frozen=True)
class Outcomes:
    """Per-image fractions of ``draws`` draws right, (seeds, attacks, images), on shared images.

    Every seed and attack (for clean accuracy: every result file) scored the same ``images``;
    ``how`` says how the attack axis becomes one outcome per image: the ``weakest`` attack (the
    one with the lowest mean, per seed) or the ``average`` of replicate evaluations.
    """

    seeds: tuple
    attacks: tuple
    images: tuple
    fractions: np.ndarray
    draws: int
    how: str = WEAKEST

    def metric(self, name: str) -> np.ndarray:
        """(seeds, attacks, images) outcomes under a metric: fractions, or right on every draw (0/1)."""
        if name == DRAW_MEAN:
            return self.fractions
        if name == ALL_DRAWS:
            return (self.fractions >= ALL_RIGHT).astype(float)
        raise ValueError(f"unknown metric {name!r}: {', '.join(METRICS)}")

    def resubmitted(self, n: int) -> np.ndarray:
        """(seeds, attacks, images): each image's chance that ``n`` fresh draws are all right, when
        the attacker may submit its adversarial image ``n`` times (DiffHammer's N-evaluation).

        From k right of the D stored draws, C(k, n) / C(D, n) is the unbiased estimate of p^n (the
        draws of one image are independent given the image): n = 1 is the draw-mean, n = D all draws.
        """
        if not 1 <= n <= self.draws:
            raise ValueError(f"n = {n} resubmissions: between 1 and the {self.draws} draws stored")
        right = np.rint(self.fractions * self.draws).astype(int)
        chances = np.array([math.comb(k, n) for k in range(self.draws + 1)], dtype=float) / math.comb(self.draws, n)
        return chances[right]

    def per_image(self, name: str) -> np.ndarray:
        """(seeds, images): each seed's outcome per image under its weakest attack (or the replicates' average)."""
        return combine(self.metric(name), self.how)

    def weakest_attacks(self, name: str = DRAW_MEAN) -> list[str]:
        """Per seed, the attack the worst case rests on."""
        if self.how != WEAKEST:
            return []
        return [self.attacks[k] for k in weakest(self.metric(name))[0]]

    def on(self, images) -> Outcomes:
        """The same outcomes restricted to ``images`` (in that order)."""
        position = {image: i for i, image in enumerate(self.images)}
        columns = [position[i] for i in images]
        return Outcomes(self.seeds, self.attacks, tuple(images), self.fractions[:, :, columns], self.draws, self.how)

    def restricted_to(self, seeds) -> Outcomes:
        rows = [self.seeds.index(s) for s in seeds]
        return Outcomes(tuple(seeds), self.attacks, self.images, self.fractions[rows], self.draws, self.how)


def _draws(rows: pd.DataFrame) -> int:
    draws = rows["draws"].dropna()
    return int(draws.max()) if len(draws) else 1


def seeds_of(rows: pd.DataFrame) -> list:
    """The training seeds the rows come from, in order (one None entry for results without a seed)."""
    if "seed" not in rows.columns:
        return [None]
    return sorted(rows["seed"].dropna().unique().tolist()) or [None]


def _common_outcomes(rows: pd.DataFrame, column: str, how: str) -> Outcomes | None:
    """(seeds, attacks, images) on the images every result scored, under the seeds every attack has."""
    usable = [isinstance(i, tuple) and isinstance(f, tuple) for i, f in zip(rows["sample_indices"], rows[column])]
    if not rows.size or not all(usable):
        return None
    seeds = rows["seed"].tolist() if "seed" in rows.columns else [None] * len(rows)
    seeds = [None if pd.isna(s) else s for s in seeds]
    if how == WEAKEST:
        keys = list(rows["attack"])
    else:  # replicate files: numbered within each seed
        counter: dict = {}
        keys = []
        for seed in seeds:
            counter[seed] = counter.get(seed, -1) + 1
            keys.append(counter[seed])
    table: dict = {}
    for key, seed, indices, fractions in zip(keys, seeds, rows["sample_indices"], rows[column]):
        table.setdefault(key, {})[seed] = dict(zip(indices, fractions))
    if how == AVERAGE:  # every seed has the same number of replicates: keep the fewest
        shared_seeds = sorted(set(seeds), key=lambda s: (s is None, s))
        replicates = min(sum(1 for k in table if s in table[k]) for s in shared_seeds)
        table = {k: v for k, v in table.items() if k < replicates}
    shared_seeds = sorted(
        set.intersection(*(set(per_seed) for per_seed in table.values())), key=lambda s: (s is None, s)
    )
    if not shared_seeds:
        return None
    common = sorted(set.intersection(*(set(p[s]) for p in table.values() for s in shared_seeds)))
    if not common:
        return None
    attacks = tuple(table)
    matrix = np.array([[[table[k][s][i] for i in common] for k in attacks] for s in shared_seeds], dtype=float)
    return Outcomes(tuple(shared_seeds), attacks, tuple(common), matrix, _draws(rows), how)


def robust_outcomes(rows: pd.DataFrame) -> Outcomes | None:
    """Per-image robust outcomes of one defense under the attacks in ``rows`` (None: not all have them)."""
    rows = rows.dropna(subset=["robust_accuracy"])
    return _common_outcomes(rows, "robust_fractions", WEAKEST) if len(rows) else None


def clean_outcomes(rows: pd.DataFrame) -> Outcomes | None:
    """Per-image clean outcomes of one defense: each result file is a replicate evaluation of the same
    clean images on ``draws`` draws; they are averaged, so "all draws" stays N = draws however many
    attacks were run (pooling every file's draws made it fall 0.90 / 0.67 / 0.55 with 1 / 3 / 6 files)."""
    rows = rows.dropna(subset=["clean_accuracy"])
    return _common_outcomes(rows, "clean_fractions", AVERAGE) if len(rows) else None


def outcomes_estimate(outcomes: Outcomes, source: str, basis: str = "") -> Estimate:
    """An accuracy from per-image outcomes: one seed, an image bootstrap; several, seeds as the unit."""
    per_image = outcomes.per_image(DRAW_MEAN)
    all_draws = float(outcomes.per_image(ALL_DRAWS).mean())
    value = float(per_image.mean())
    if len(outcomes.seeds) > 1:
        test = seed_test(per_image)
        return Estimate(value, test.low, test.high, source, basis, all_draws, sd=test.seed_sd, seeds=test.seeds)
    interval = image_bootstrap(outcomes.metric(DRAW_MEAN), how_a=outcomes.how, resamples=RESAMPLES)
    return Estimate(value, max(0.0, interval.low), min(1.0, interval.high), source, basis, all_draws)


def resubmission_estimates(outcomes: Outcomes, source: str = "") -> list[Estimate]:
    """Robust accuracy when each adversarial image is submitted N = 1..draws times and counts only if
    every submission is right: per seed the defense's weakest attack at that N (an attacker picks
    the attack for the protocol), the interval as for every accuracy (images; seeds when several)."""
    estimates = []
    for n in range(1, outcomes.draws + 1):
        chances = outcomes.resubmitted(n)
        per_image = combine(chances, outcomes.how)
        value = float(per_image.mean())
        if len(outcomes.seeds) > 1:
            test = seed_test(per_image)
            estimates.append(Estimate(value, test.low, test.high, source, sd=test.seed_sd, seeds=test.seeds))
        else:
            interval = image_bootstrap(chances, how_a=outcomes.how, resamples=RESAMPLES)
            estimates.append(Estimate(value, max(0.0, interval.low), min(1.0, interval.high), source))
    return estimates


def clean_estimate(rows: pd.DataFrame) -> Estimate | None:
    """Clean accuracy of one defense: the mean over its result files (each re-scores the same images)."""
    rows = rows.dropna(subset=["clean_accuracy"])
    if rows.empty:
        return None
    outcomes = clean_outcomes(rows)
    if outcomes is not None:
        return outcomes_estimate(outcomes, "clean")
    value = float(rows["clean_accuracy"].mean())
    all_draws = float(rows["clean_strict_accuracy"].mean())
    n = rows["n"].max()
    if pd.isna(n) or n <= 0:
        return Estimate(value, math.nan, math.nan, "clean", all_draws=all_draws)
    low, high = wilson_interval(value * n, int(n))
    return Estimate(value, low, high, "clean", all_draws=all_draws)


def attack_estimate(rows: pd.DataFrame) -> Estimate | None:
    """Robust accuracy under one attack: its result, or with several seeds their mean ± sd."""
    rows = rows.dropna(subset=["robust_accuracy"])
    if rows.empty:
        return None
    if len(seeds_of(rows)) < 2:
        return Estimate.robust(rows.iloc[0])
    return worst_case(rows)


def worst_case(rows: pd.DataFrame) -> Estimate | None:
    """Robust accuracy under the defense's strongest attack: the lowest of the per-attack accuracies.

    One rule for every defense and both metrics: per seed, the attack with the lowest accuracy
    over the images every attack scored. (Each image's minimum over attacks is AutoAttack's rule
    for deterministic models; on a randomized defense it is a minimum of noisy fractions, biased
    low, so it would handicap randomized defenses only: stats.weakest.) The interval is an image
    bootstrap that re-picks the attack in every resample; with several seeds, seeds are the unit.
    Without per-image outcomes the lowest attack's own result and Wilson interval stand in.
    """
    rows = rows.dropna(subset=["robust_accuracy"])
    if rows.empty:
        return None
    names = list(dict.fromkeys(rows["attack"]))
    attacks = ", ".join(names)
    outcomes = robust_outcomes(rows)
    if outcomes is None:
        lowest = Estimate.robust(rows.loc[rows["robust_accuracy"].idxmin()])
        has_all = all(
            isinstance(i, tuple) and isinstance(f, tuple)
            for i, f in zip(rows["sample_indices"], rows["robust_fractions"])
        )
        why = "no image scored by every attack" if has_all else "no per-image outcomes"
        all_draws = float(rows["robust_strict_accuracy"].min())
        basis = f"lowest of the per-attack accuracies: {lowest.source} ({why}: its own interval)"
        return Estimate(lowest.value, lowest.low, lowest.high, attacks, basis, all_draws)
    images, seeds = len(outcomes.images), len(outcomes.seeds)
    largest = max(len(i) for i in rows["sample_indices"])
    scope = f"{images} images" + (f" x {seeds} seeds" if seeds > 1 else "")
    scope += "" if images == largest else f" (common to all; up to {largest} scored)"
    chosen = ", ".join(dict.fromkeys(outcomes.weakest_attacks()))
    basis = f"lowest of the per-attack accuracies over {len(names)} attacks ({chosen}) on {scope}"
    return outcomes_estimate(outcomes, attacks, basis)


def shared(a: Outcomes | None, b: Outcomes | None) -> tuple[Outcomes, Outcomes] | None:
    """``a`` and ``b`` on the images and seeds both have (None: nothing shared)."""
    if a is None or b is None:
        return None
    images = [i for i in a.images if i in set(b.images)]
    seeds = [s for s in a.seeds if s in set(b.seeds)]
    if not images or not seeds:
        return None
    return a.on(images).restricted_to(seeds), b.on(images).restricted_to(seeds)


def paired_all_draws(a: Outcomes | None, b: Outcomes | None) -> PairedTest | None:
    """Image-level sign test (exact McNemar on one seed) of right-on-every-draw outcomes on shared images."""
    pair = shared(a, b)
    if pair is None:
        return None
    return clustered_sign_test(pair[0].per_image(ALL_DRAWS), pair[1].per_image(ALL_DRAWS))
