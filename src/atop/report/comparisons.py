"""Paired comparisons of two defenses on the same images (and training seeds), under both questions.

Each comparison is asked two questions (docs/verdicts.md):

- **The method** (training seeds are the unit): does the training procedure help? Each seed
  trained its own classifier, AT baseline, purifiers and fine-tuning; per-(seed, image)
  differences between two defenses go to a crossed random-effects test (stats.seed_test), whose
  spread counts the training runs. With one seed the method is undecided.
- **These trained models** (the run's checkpoints; images are the unit): the exact sign test on
  per-image outcomes (McNemar's on one seed), each image's difference averaged over the seeds
  that share it, with an image bootstrap interval.

Both decide on the worst case over draws (an image counts only if all ``draws`` draws of one
evaluation classify it right: an attacker who may resubmit), under each defense's strongest attack
(the lowest of its per-attack accuracies), Holm-adjusted over the report's comparisons (one family
per question and metric: with_holm). The draw-mean accuracy (one evaluation, the paper's metric)
is tested the same way and quoted. A test that finds nothing states the smallest difference the
run could have detected at the family's level. Results without per-image outcomes (older files)
fall back to whether two 95 % intervals overlap, and say so.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, replace

import pandas as pd

from ..stats import Interval, PairedTest, SeedTest, clustered_sign_test, detectable_difference, holm, image_bootstrap
from ..stats import seed_test as method_test
from .estimates import (
    ALL_DRAWS,
    DRAW_MEAN,
    RESAMPLES,
    Estimate,
    Outcomes,
    clean_estimate,
    clean_outcomes,
    robust_outcomes,
    seeds_of,
    shared,
    worst_case,
)
from .results import attack_columns, full_gradient, main_results

METHOD, MODELS = "method", "these_models"  # the two questions, as metrics.json names them
ALPHA = 0.05  # family-wise, after Holm's correction
POWER = 0.8
PRIMARY = "worst case over draws"  # the metric verdicts are decided on
SECONDARY = "draw-mean"


def _direction(p_value: float, sign: float) -> str:
    if not p_value < ALPHA or sign == 0:
        return "none"
    return "higher" if sign > 0 else "lower"


def p_text(p: float) -> str:
    return "< 0.0001" if p < 1e-4 else f"= {p:.2g}"


def pp(value: float) -> str:
    return f"{100 * value:+.1f}"


@dataclass(frozen=True)
class Paired:
    """Two defenses on the images (and training seeds) both were scored on, under both questions."""

    images: int
    seeds: int
    all_draws_a: float
    all_draws_b: float
    mean_a: float
    mean_b: float
    model: PairedTest  # worst case over draws: sign test on per-image (seed-averaged) differences
    model_mean: PairedTest  # draw-mean, the same test
    interval: Interval  # worst case over draws, a - b, image bootstrap
    mean_interval: Interval
    differences: tuple[float, ...]  # per image, seed-averaged, worst case over draws: for the detectable size
    method: SeedTest | None = None  # None: one seed
    method_mean: SeedTest | None = None
    model_holm: float = math.nan  # filled in once the report's whole family is known
    model_mean_holm: float = math.nan
    method_holm: float = math.nan
    method_mean_holm: float = math.nan
    family: int = 1  # comparisons in the model-level family (Holm)
    method_family: int = 1  # comparisons with a method-level test (its Holm family)
    method_attacks: tuple[str, ...] = ()  # the attacks every seed ran, when fewer than the model level's

    @property
    def n(self) -> int:
        return self.images

    def outcome(self, level: str, metric: str = ALL_DRAWS) -> str:
        if level == MODELS:
            test, p = (self.model, self.model_holm) if metric == ALL_DRAWS else (self.model_mean, self.model_mean_holm)
            return _direction(p, test.a_better - test.b_better)
        test, p = (self.method, self.method_holm) if metric == ALL_DRAWS else (self.method_mean, self.method_mean_holm)
        return "undecided" if test is None else _direction(p, test.mean)

    @property
    def detectable(self) -> float:
        """Smallest worst-case difference the image-level test detects with 80 % power after Holm."""
        return detectable_difference(self.differences, ALPHA / max(self.family, 1), POWER)

    def method_power(self) -> tuple[float, int | None]:
        """Power of the method-level test at the observed difference, and the seeds that would give 80 %."""
        if self.method is None:
            return math.nan, None
        alpha = ALPHA / max(self.method_family, 1)
        effect = self.method.mean
        return self.method.power(effect, alpha=alpha), self.method.seeds_for_power(effect, POWER, alpha)

    def units(self) -> str:
        return f"{self.images} images x {self.seeds} seeds" if self.seeds > 1 else f"{self.images} images"

    def model_text(self) -> str:
        test = self.model
        return (
            f"{PRIMARY} {100 * self.all_draws_a:.1f} vs {100 * self.all_draws_b:.1f}, {pp(self.interval.estimate)} pp "
            f"[{pp(self.interval.low)}, {pp(self.interval.high)}] (sign test {test.a_better}:{test.b_better} images, "
            f"Holm p {p_text(self.model_holm)}); {SECONDARY} {100 * self.mean_a:.1f} vs {100 * self.mean_b:.1f}, "
            f"{pp(self.mean_interval.estimate)} pp [{pp(self.mean_interval.low)}, {pp(self.mean_interval.high)}] "
            f"(Holm p {p_text(self.model_mean_holm)})"
        )

    def method_text(self) -> str:
        if self.method is None:
            return "one training seed"
        t, m = self.method, self.method_mean
        seeds = ", ".join(pp(d) for d in t.seed_means)
        on = f" on {', '.join(self.method_attacks)} (the attacks every seed ran)" if self.method_attacks else ""
        return (
            f"{t.seeds} seeds{on}, {t.images} images: {PRIMARY} {pp(t.mean)} pp [{pp(t.low)}, {pp(t.high)}] (per seed {seeds}; "
            f"t on {t.df:.0f} df, Holm p {p_text(self.method_holm)}); {SECONDARY} {pp(m.mean)} pp "
            f"[{pp(m.low)}, {pp(m.high)}] (Holm p {p_text(self.method_mean_holm)})"
        )


def paired(
    a: Outcomes | None, b: Outcomes | None, seed: int = 0, method: tuple[Outcomes, Outcomes] | None = None
) -> Paired | None:
    """Both questions' tests of ``a`` against ``b`` on the images and seeds both have; None without per-image outcomes.

    ``method`` (outcomes of the attacks every seed ran, when the other seeds ran fewer: config
    ``replicates``) is what the method-level test reads; by default ``a`` and ``b`` themselves.
    """
    pair = shared(a, b)
    if pair is None:
        return None
    a, b = pair
    images, seeds = a.images, a.seeds
    all_draws_a, all_draws_b = a.per_image(ALL_DRAWS), b.per_image(ALL_DRAWS)
    mean_a, mean_b = a.per_image(DRAW_MEAN), b.per_image(DRAW_MEAN)
    method_pair = shared(*method) if method is not None else (a, b)
    method_attacks: tuple[str, ...] = ()
    if method_pair is not None and method is not None:
        method_attacks = tuple(dict.fromkeys((*method_pair[0].attacks, *method_pair[1].attacks)))
    several = method_pair is not None and len(method_pair[0].seeds) > 1 and len(method_pair[0].images) > 1
    if several:
        method_all_draws = method_pair[0].per_image(ALL_DRAWS) - method_pair[1].per_image(ALL_DRAWS)
        method_mean = method_pair[0].per_image(DRAW_MEAN) - method_pair[1].per_image(DRAW_MEAN)
    return Paired(
        images=len(images),
        seeds=len(seeds),
        all_draws_a=float(all_draws_a.mean()),
        all_draws_b=float(all_draws_b.mean()),
        mean_a=float(mean_a.mean()),
        mean_b=float(mean_b.mean()),
        model=clustered_sign_test(all_draws_a, all_draws_b),
        model_mean=clustered_sign_test(mean_a, mean_b),
        interval=image_bootstrap(a.metric(ALL_DRAWS), b.metric(ALL_DRAWS), a.how, b.how, RESAMPLES, seed),
        mean_interval=image_bootstrap(a.metric(DRAW_MEAN), b.metric(DRAW_MEAN), a.how, b.how, RESAMPLES, seed),
        differences=tuple((all_draws_a - all_draws_b).mean(axis=0).tolist()),
        method=method_test(method_all_draws) if several else None,
        method_mean=method_test(method_mean) if several else None,
        method_attacks=method_attacks if several else (),
    )


@dataclass(frozen=True)
class Comparison:
    """``a`` is claimed to be higher than ``b``; ``paired`` decides when per-image outcomes exist."""

    label: str
    a: Estimate
    b: Estimate
    paired: Paired | None = None
    defenses: tuple[str, ...] = ()
    attacks: tuple[str, ...] = ()  # empty: clean accuracy

    def outcome(self, level: str = MODELS) -> str:
        if self.paired is not None:
            return self.paired.outcome(level)
        if level == METHOD:
            return "undecided"
        if self.a.beats(self.b):
            return "higher"
        if self.b.beats(self.a):
            return "lower"
        return "overlap"

    def verdict_text(self, level: str) -> str:
        outcome = self.outcome(level)
        if self.paired is None:
            words = {
                "higher": "higher beyond noise",
                "lower": "LOWER beyond noise",
                "overlap": "intervals overlap",
                "undecided": "undecided",
            }
            return words[outcome] + "; unpaired: no per-image outcomes"
        p = self.paired
        if outcome == "undecided":
            return "undecided: one training seed"
        if outcome == "none" and level == MODELS:
            text = f"no detectable difference (could detect {100 * p.detectable:.1f} pp or more)"
        elif outcome == "none":
            power, needed = p.method_power()
            more = f"about {needed} seeds would give 80 %" if needed else "more than 64 seeds would be needed"
            text = f"no detectable difference ({p.method.seeds} seeds give power {power:.2f} at the observed difference; {more})"
        else:
            text = {"higher": "higher", "lower": "LOWER"}[outcome]
        secondary = p.outcome(level, DRAW_MEAN)
        if secondary != outcome:
            text += (
                f"; the {SECONDARY} disagrees: "
                + {"higher": "higher", "lower": "LOWER", "none": "no difference"}[secondary]
            )
        return text

    def text(self, level: str) -> str:
        if self.paired is None:
            return f"{self.label}: {self.a.text()} vs {self.b.text()} ({self.verdict_text(level)})"
        body = self.paired.model_text() if level == MODELS else self.paired.method_text()
        return f"{self.label}, {self.paired.units()}: {body}: {self.verdict_text(level)}"


def with_holm(comparisons: list[Comparison]) -> list[Comparison]:
    """The comparisons with Holm-adjusted p-values over the whole list: one family per question and metric."""
    at = [i for i, c in enumerate(comparisons) if c.paired is not None]
    pairs = [comparisons[i].paired for i in at]
    adjusted = {
        "model_holm": holm([p.model.p_value for p in pairs]),
        "model_mean_holm": holm([p.model_mean.p_value for p in pairs]),
    }
    method_at = [k for k, p in enumerate(pairs) if p.method is not None]
    for name, attribute in (("method_holm", "method"), ("method_mean_holm", "method_mean")):
        values = holm([getattr(pairs[k], attribute).p_value for k in method_at])
        adjusted[name] = [math.nan] * len(pairs)
        for k, value in zip(method_at, values, strict=True):
            adjusted[name][k] = value
    out = list(comparisons)
    for position, i in enumerate(at):
        fields = {name: values[position] for name, values in adjusted.items()}
        out[i] = replace(
            out[i], paired=replace(out[i].paired, family=len(at), method_family=max(len(method_at), 1), **fields)
        )
    return out


def _seed(label: str) -> int:
    """A bootstrap seed of the comparison itself: the same inputs give the same interval in any report."""
    return zlib.crc32(label.encode())


def _compare(label: str, defenses, attacks, rows_a: pd.DataFrame, rows_b: pd.DataFrame, clean=False):
    estimate, outcomes = (clean_estimate, clean_outcomes) if clean else (worst_case, robust_outcomes)
    ea, eb = estimate(rows_a), estimate(rows_b)
    if not (ea and eb):
        return None
    method = None
    every_seed = _attacks_of_every_seed(rows_a, rows_b)
    if not clean and every_seed is not None:
        keep_a, keep_b = rows_a[rows_a["attack"].isin(every_seed)], rows_b[rows_b["attack"].isin(every_seed)]
        method = (outcomes(keep_a), outcomes(keep_b))
    # the image level pairs the seeds both defenses have: a seed only one of them ran (replicates)
    # must not shrink the other's images
    both = set(seeds_of(rows_a)) & set(seeds_of(rows_b))
    if "seed" in rows_a.columns and "seed" in rows_b.columns and both != {None}:
        rows_a, rows_b = rows_a[rows_a["seed"].isin(both)], rows_b[rows_b["seed"].isin(both)]
    test = paired(outcomes(rows_a), outcomes(rows_b), _seed(label), method)
    return Comparison(label, ea, eb, test, tuple(defenses), tuple(attacks))


def _attacks_of_every_seed(rows_a: pd.DataFrame, rows_b: pd.DataFrame) -> list[str] | None:
    """The attacks both defenses ran under every seed, when some ran under fewer (config replicates);
    None when every attack ran under every seed (the method test reads the same outcomes)."""
    rows = pd.concat([rows_a, rows_b])
    seeds = set(seeds_of(rows))
    if len(seeds) < 2:
        return None
    complete = [
        attack
        for attack in dict.fromkeys(rows["attack"])
        if all(set(r[r["attack"] == attack]["seed"]) >= seeds for r in (rows_a, rows_b))
    ]
    if len(complete) == rows["attack"].nunique():
        return None
    return complete or None


def defense_pairs(frame: pd.DataFrame, match) -> list[tuple[str, str]]:
    """(a, b) defense pairs for which ``match(setting_a, setting_b)`` holds."""
    settings = main_results(frame).drop_duplicates("defense").set_index("defense", drop=False)
    return [
        (a, b) for a in settings.index for b in settings.index if a != b and match(settings.loc[a], settings.loc[b])
    ]


def robust_comparisons(frame, pairs, attacks_of, scope: str) -> list[Comparison]:
    """Each defense under its strongest of the attacks both defenses of a pair were run against."""
    full = full_gradient(frame)
    comparisons = []
    for a, b in pairs:
        attacks = attacks_of(a, b, full)
        label = f"{a} vs {b}, worst case over {len(attacks)} {scope}attacks"
        rows = full[full["attack"].isin(attacks)]
        found = _compare(label, (a, b), attacks, rows[rows["defense"] == a], rows[rows["defense"] == b])
        if found:
            comparisons.append(found)
    return comparisons


def common_attacks(labels: tuple[str | None, ...]):
    def attacks_of(a, b, full):
        common = set(full[full["defense"] == a]["attack"]) & set(full[full["defense"] == b]["attack"])
        return sorted(x for x, seen in attack_columns(full) if x in common and seen in labels)

    return attacks_of


def clean_comparisons(frame, pairs) -> list[Comparison]:
    main = main_results(frame)
    comparisons = []
    for a, b in pairs:
        found = _compare(f"{a} vs {b}, clean", (a, b), (), main[main["defense"] == a], main[main["defense"] == b], True)
        if found:
            comparisons.append(found)
    return comparisons


def gradient_comparisons(frame: pd.DataFrame) -> list[Comparison]:
    """Classifier-only vs full-gradient robust accuracy of the same defense and attack family, image by image."""
    main = main_results(frame)
    comparisons = []
    for (defense, family), bpda in main[main["gradient"] == "bpda"].groupby(["defense", "attack_family"]):
        full = main[(main["gradient"] == "full") & (main["defense"] == defense) & (main["attack_family"] == family)]
        label = f"{defense} {family}: classifier-only vs full gradient"
        attacks = (*bpda["attack"], *full["attack"])
        found = _compare(label, (defense,), attacks, bpda, full)
        if found:
            comparisons.append(found)
    return comparisons
