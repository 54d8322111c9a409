"""The paper's claims, judged from the run's numbers, in plain words.

Every claim is asked two questions (docs/verdicts.md):

- **The method** (training seeds are the unit): does the training procedure help? Each seed
  trained its own classifier, AT baseline, purifiers and fine-tuning; per-(seed, image)
  differences between two defenses go to a crossed random-effects test (stats.seed_test), whose
  spread counts the training runs. With one seed the method is undecided, and the summary says
  what would decide it.
- **These trained models** (the run's checkpoints; images are the unit): the exact sign test on
  per-image outcomes (McNemar's on one seed), each image's difference averaged over the seeds
  that share it, with an image bootstrap interval.

A verdict is decided on the worst case over draws (an image counts only if all ``draws`` draws of
one evaluation classify it right: an attacker who may resubmit), under each defense's strongest
attack (the lowest of its per-attack accuracies), Holm-adjusted over the report's comparisons
(one family per question and metric). The draw-mean accuracy (one evaluation, the paper's metric)
is tested the same way and quoted; a verdict says when it points elsewhere. A claim about several
settings holds only if every comparison does ("partly supported, k of n" otherwise). A test that
finds nothing states the smallest difference the run could have detected at the family's level.
Results without per-image outcomes (older files) fall back to whether two 95 % intervals overlap,
and say so. Claims the results cannot speak to say why.
"""

from __future__ import annotations

import base64
import math
import re
import zlib
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from ..stats import Interval, PairedTest, SeedTest, clustered_sign_test, detectable_difference, holm, image_bootstrap
from ..stats import seed_test as method_test
from .claims import CLAIMS, ClaimSpec, matches
from .results import main_results
from .tables import (
    ALL_DRAWS,
    DRAW_MEAN,
    Estimate,
    Outcomes,
    attack_columns,
    clean_estimate,
    clean_outcomes,
    eot_averaged,
    full_gradient,
    headline_rt,
    robust_outcomes,
    seeds_of,
    shared,
    worst_case,
)

SUPPORTED, PARTLY, CONTRADICTED, PARTLY_CONTRADICTED, MIXED, NOISE, CANNOT, UNDECIDED = (
    "supported",
    "partly supported",
    "contradicted",
    "partly contradicted",
    "mixed",
    "no detectable difference",
    "cannot judge",
    "undecided",
)
METHOD, MODELS = "method", "these_models"  # the two questions, as metrics.json names them
LEVEL_WORDS = {
    METHOD: "The method",
    MODELS: "These trained models",
}
SHOWN = 3  # comparisons quoted per claim
ALPHA = 0.05  # family-wise, after Holm's correction
RESAMPLES = 2000  # image bootstrap resamples per comparison
POWER = 0.8
PRIMARY = "worst case over draws"  # the metric verdicts are decided on
SECONDARY = "draw-mean"
SEEDS_CONFIG = "config/digits-seeds.yaml"  # the default with several training seeds


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
    strict_a: float
    strict_b: float
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
            f"{PRIMARY} {100 * self.strict_a:.1f} vs {100 * self.strict_b:.1f}, {pp(self.interval.estimate)} pp "
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
    strict_a, strict_b = a.per_image(ALL_DRAWS), b.per_image(ALL_DRAWS)
    mean_a, mean_b = a.per_image(DRAW_MEAN), b.per_image(DRAW_MEAN)
    method_pair = shared(*method) if method is not None else (a, b)
    method_attacks: tuple[str, ...] = ()
    if method_pair is not None and method is not None:
        method_attacks = tuple(dict.fromkeys((*method_pair[0].attacks, *method_pair[1].attacks)))
    several = method_pair is not None and len(method_pair[0].seeds) > 1 and len(method_pair[0].images) > 1
    if several:
        method_strict = method_pair[0].per_image(ALL_DRAWS) - method_pair[1].per_image(ALL_DRAWS)
        method_mean = method_pair[0].per_image(DRAW_MEAN) - method_pair[1].per_image(DRAW_MEAN)
    return Paired(
        images=len(images),
        seeds=len(seeds),
        strict_a=float(strict_a.mean()),
        strict_b=float(strict_b.mean()),
        mean_a=float(mean_a.mean()),
        mean_b=float(mean_b.mean()),
        model=clustered_sign_test(strict_a, strict_b),
        model_mean=clustered_sign_test(mean_a, mean_b),
        interval=image_bootstrap(a.metric(ALL_DRAWS), b.metric(ALL_DRAWS), a.how, b.how, RESAMPLES, seed),
        mean_interval=image_bootstrap(a.metric(DRAW_MEAN), b.metric(DRAW_MEAN), a.how, b.how, RESAMPLES, seed),
        differences=tuple((strict_a - strict_b).mean(axis=0).tolist()),
        method=method_test(method_strict) if several else None,
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


@dataclass(frozen=True)
class Claim:
    key: str
    statement: str
    verdicts: dict  # level -> verdict
    evidence: dict  # level -> text
    metric: str = ""  # which accuracy the verdict is decided on, and whether the other agrees
    comparisons: tuple = ()

    @property
    def verdict(self) -> str:
        """The verdict the summary leads with: the method's when it is decided, else these models'."""
        method = self.verdicts.get(METHOD, CANNOT)
        return self.verdicts[MODELS] if method in (UNDECIDED, CANNOT) else method


def leading_question(decide_on: str, seeds: int) -> str:
    """The question the headline leads with (config verdicts.decide_on): auto = the method when seeds allow."""
    if decide_on == "auto":
        return METHOD if seeds > 1 else MODELS
    if decide_on == "method":
        if seeds < 2:
            raise ValueError(f"verdicts.decide_on = 'method' needs at least 2 training seeds; the results have {seeds}")
        return METHOD
    if decide_on == MODELS:
        return MODELS
    raise ValueError(f"verdicts.decide_on must be auto, method or these_models, got {decide_on!r}")


def universal(outcomes: list[str]) -> tuple[str, str]:
    """A claim over several comparisons holds only if every one does: (verdict, counts)."""
    higher, lower = outcomes.count("higher"), outcomes.count("lower")
    n = len(outcomes)
    if higher == n:
        verdict = SUPPORTED
    elif lower == n:
        verdict = CONTRADICTED
    elif higher and lower:
        verdict = MIXED
    elif higher:
        verdict = PARTLY
    elif lower:
        verdict = PARTLY_CONTRADICTED
    else:
        verdict = NOISE
    return verdict, f"{higher} of {n} comparisons higher, {lower} lower"


def _metric_text(comparisons: list[Comparison]) -> str:
    if not comparisons:
        return ""
    if all(c.paired is None for c in comparisons):
        return "verdict on the draw-mean; unpaired (no per-image outcomes): the two 95 % intervals must not overlap"
    disagree = sum(
        c.paired is not None and c.paired.outcome(MODELS, DRAW_MEAN) != c.outcome(MODELS) for c in comparisons
    )
    agrees = (
        "the draw-mean agrees" if not disagree else f"the {SECONDARY} DISAGREES in {disagree} of {len(comparisons)}"
    )
    return f"verdict on the {PRIMARY} under each defense's strongest attack, Holm-adjusted; {agrees}"


def _shown(comparisons: list[Comparison], level: str) -> str:
    # the clearest cases first: lower ones (they matter most), then the rest
    rank = ("lower", "higher", "none", "undecided", "overlap")
    shown = sorted(comparisons, key=lambda c: rank.index(c.outcome(level)))[:SHOWN]
    more = f"; and {len(comparisons) - SHOWN} more" if len(comparisons) > SHOWN else ""
    return "; ".join(c.text(level) for c in shown) + more


def judge(key: str, statement: str, comparisons: list[Comparison], why_not: str) -> Claim:
    if not comparisons:
        return Claim(key, statement, {METHOD: CANNOT, MODELS: CANNOT}, {METHOD: why_not, MODELS: why_not})
    verdicts, evidence = {}, {}
    verdicts[MODELS], counts = universal([c.outcome(MODELS) for c in comparisons])
    detectable = [c.paired.detectable for c in comparisons if c.paired is not None]
    if verdicts[MODELS] == NOISE and detectable:
        counts = (
            f"the run could detect differences of {100 * max(detectable):.1f} pp or more (80 % power after Holm); "
            + counts
        )
    if verdicts[MODELS] == PARTLY:
        counts = f"partly supported, {counts.split(' comparisons')[0]} comparisons; " + counts
    evidence[MODELS] = counts + "; " + _shown(comparisons, MODELS)
    if not any(c.paired is not None and c.paired.method is not None for c in comparisons):
        verdicts[METHOD] = UNDECIDED
        evidence[METHOD] = (
            "one training seed: it compares two trained models, not the training methods behind them (weights "
            f"differ between machines; a method needs several seeds, e.g. {SEEDS_CONFIG})"
        )
    else:
        verdicts[METHOD], counts = universal([c.outcome(METHOD) for c in comparisons])
        if verdicts[METHOD] == PARTLY:
            counts = f"partly supported, {counts.split(' comparisons')[0]} comparisons; " + counts
        evidence[METHOD] = counts + "; " + _shown(comparisons, METHOD)
    return Claim(key, statement, verdicts, evidence, _metric_text(comparisons), tuple(comparisons))


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


def _pairs(frame: pd.DataFrame, match) -> list[tuple[str, str]]:
    """(a, b) defense pairs for which ``match(setting_a, setting_b)`` holds."""
    settings = main_results(frame).drop_duplicates("defense").set_index("defense")
    return [
        (a, b) for a in settings.index for b in settings.index if a != b and match(settings.loc[a], settings.loc[b])
    ]


def _robust_comparisons(frame, pairs, attacks_of, scope: str) -> list[Comparison]:
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


def _common(labels: tuple[str | None, ...]):
    def attacks_of(a, b, full):
        common = set(full[full["defense"] == a]["attack"]) & set(full[full["defense"] == b]["attack"])
        return sorted(x for x, seen in attack_columns(full) if x in common and seen in labels)

    return attacks_of


def _comparisons(frame: pd.DataFrame, spec: ClaimSpec, gradient_pairs: list[Comparison], labelled: bool):
    """The comparisons that test one claim (claims.py), and what to say when there are none."""
    if spec.metric == "gradient":
        return gradient_pairs, spec.why_not
    if spec.needs_labels and not labelled:
        return [], "the results carry no seen/unseen labels"
    pairs = _pairs(frame, lambda a, b: matches(spec, a, b))
    if spec.metric == "clean":
        return _clean_comparisons(frame, pairs), spec.why_not
    scope = "" if None in spec.attacks else "unseen "
    return _robust_comparisons(frame, pairs, _common(spec.attacks), scope), spec.why_not


def claims(frame: pd.DataFrame, gradient_pairs: list[Comparison], reference: pd.DataFrame, dataset: str) -> list[Claim]:
    labelled = bool(full_gradient(frame)["seen"].notna().any())
    tested = [(spec, *_comparisons(frame, spec, gradient_pairs, labelled)) for spec in CLAIMS]
    # one family for Holm: every paired comparison of the report
    family = with_holm([c for _, comparisons, _ in tested for c in comparisons])
    judged, at = [], 0
    for spec, comparisons, why_not in tested:
        judged.append(judge(spec.key, spec.statement, family[at : at + len(comparisons)], why_not))
        at += len(comparisons)
    return [*judged, _reproduces(reference, dataset, len(seeds_of(main_results(frame))))]


def _clean_comparisons(frame, pairs) -> list[Comparison]:
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


def _reproduces(joined: pd.DataFrame, dataset: str, seeds: int) -> Claim:
    margin = joined.attrs.get("equivalence_margin", math.nan)
    statement = (
        f"The run reproduces the paper's published numbers (each within {100 * margin:.0f} pp by an equivalence test)."
        if not math.isnan(margin)
        else "The run reproduces the paper's published numbers."
    )
    comparable = joined[joined["status"] == "comparable"] if "status" in joined else joined
    key = "reproduces_paper_numbers"
    if comparable.empty:
        datasets = ", ".join(sorted(set(joined["paper_dataset"]))) or "none"
        shown = int(joined["run_value"].notna().sum())
        why = (
            f"no paper number is comparable: the paper reports {datasets}, this run is {dataset}"
            if dataset not in set(joined["paper_dataset"])
            else f"the run has no result under the paper's settings for {dataset}"
        )
        why += f" ({shown} run numbers are shown next to paper numbers for direction only)"
        return Claim(key, statement, {METHOD: CANNOT, MODELS: CANNOT}, {METHOD: why, MODELS: why})
    calls = comparable["equivalence"].tolist()
    equivalent, different = calls.count("equivalent"), calls.count("different")
    n = len(calls)
    # the claim holds only if every number is equivalent; an interval too wide for the margin decides nothing
    as_outcomes = {"equivalent": "higher", "different": "lower"}
    verdict, _ = universal([as_outcomes.get(call, "none") for call in calls])
    verdict = UNDECIDED if verdict == NOISE else verdict
    shown_rows = comparable[comparable["equivalence"] != "equivalent"].head(SHOWN)
    details = "; ".join(
        f"{r.paper_setting} / {r.run_defense} ({r.metric}): run {r.run_value:.2f} [{r.run_ci95_low:.2f}, "
        f"{r.run_ci95_high:.2f}] vs paper {r.paper_value:.2f}: {r.equivalence}"
        for r in shown_rows.itertuples()
    )
    evidence = (
        f"{equivalent} of {n} paper numbers equivalent within ±{100 * margin:.0f} pp (two one-sided tests at 5 %), "
        f"{different} different, {n - equivalent - different} undecided (interval wider than the margin allows)"
        + (f"; {details}" if details else "")
    )
    method = verdict if seeds > 1 else UNDECIDED
    method_evidence = evidence if seeds > 1 else "one training seed: these numbers are one training run's"
    return Claim(
        key,
        statement,
        {METHOD: method, MODELS: verdict},
        {METHOD: method_evidence, MODELS: evidence},
        f"verdict on the {SECONDARY} (the paper's metric)",
    )


VERDICT_WORDS = {
    SUPPORTED: "supported",
    PARTLY: "partly supported",
    CONTRADICTED: "CONTRADICTED",
    PARTLY_CONTRADICTED: "partly CONTRADICTED",
    MIXED: "mixed",
    NOISE: "no detectable difference",
    UNDECIDED: "undecided",
    CANNOT: "cannot judge",
}


@dataclass(frozen=True)
class Doubt:
    """Numbers a failed or unrecorded check puts in doubt: one result (``attack``) or every robust number of a defense."""

    defense: str | None  # None: every defense
    attack: str | None  # None: every attack
    why: str

    def covers(self, comparison: Comparison) -> bool:
        if not comparison.attacks:  # clean accuracy: no attack to doubt
            return False
        defense = self.defense is None or self.defense in comparison.defenses
        return defense and (self.attack is None or self.attack in comparison.attacks)


def doubts(frame: pd.DataFrame, cross_checks) -> tuple[list[Doubt], list[str]]:
    """What failed, missing or undecided checks put in doubt, and the same as phrases naming the numbers.

    A check that did not run (no checks recorded) or recorded no outcome (``passed: null``) is doubt,
    not a pass: nothing shows the number is not an artefact of gradient masking.
    """
    found, named = [], []
    several = len(seeds_of(frame)) > 1
    unknown = frame["unknown_checks"] if "unknown_checks" in frame else pd.Series("", index=frame.index)
    recorded = frame["checks_recorded"] if "checks_recorded" in frame else pd.Series(True, index=frame.index)
    for row, why in zip(frame.itertuples(), _row_doubts(frame["failed_checks"], unknown, recorded)):
        if not why:
            continue
        value = f" (seed {int(row.seed)})" if several and pd.notna(row.seed) else ""
        value += "" if pd.isna(row.robust_accuracy) else f" {100 * row.robust_accuracy:.1f}"
        if not pd.isna(row.robust_strict_accuracy):
            value += f" ({PRIMARY} {100 * row.robust_strict_accuracy:.1f})"
        found.append(Doubt(row.defense, row.attack, why))
        named.append(f"robust accuracy of {row.defense} / {row.attack}{value} ({why})")
    for check in cross_checks:
        if check.get("passed") is True:
            continue
        claim = check.get("claim", "a check")
        claim += "" if check.get("passed") is False else " (no outcome recorded)"
        # a check of one result (EOT sufficiency) names its attack; cross-attack checks doubt the defense
        found.append(Doubt(check.get("defense"), check.get("attack"), claim))
        if check.get("attack"):
            named.append(f"robust accuracy of {check['defense']} / {check['attack']} ({claim})")
        else:
            whose = f"of {check['defense']}" if check.get("defense") else "of every defense"
            named.append(f"every robust accuracy {whose} ({claim})")
    return found, list(dict.fromkeys(named))  # a check failing under several seeds is named once


def _row_doubts(failed, unknown, recorded) -> list[str]:
    out = []
    for f, u, r in zip(failed, unknown, recorded):
        parts = [f.replace(";", ", ")] if f else []
        if u:
            parts.append(f"no outcome recorded: {u.replace(';', ', ')}")
        if not r:
            parts.append("no checks recorded")
        out.append("; ".join(parts))
    return out


def headline(judged: list[Claim], frame: pd.DataFrame) -> Comparison | None:
    """AToP vs AP at the headline setting (RT2 / GAN when run): the claim people ask about first."""
    claim = next((c for c in judged if c.key == "ft_improves_over_ap"), None)
    if claim is None or not claim.comparisons:
        return None
    rt = headline_rt(frame)
    settings = main_results(frame).drop_duplicates("defense").set_index("defense")

    def distance(comparison: Comparison) -> tuple[bool, bool]:
        setting = settings.loc[comparison.defenses[0]]
        return setting["rt"] != rt, setting["purifier"] != "gan"

    return min(claim.comparisons, key=distance)  # the first of the closest: paper order


def _rounded(value: float) -> float | None:
    return None if value is None or math.isnan(value) else round(float(value), 4)


def comparison_metrics(comparison: Comparison | None, doubted: bool = False) -> dict:
    """A paired comparison as numbers (fractions) for metrics.json, under both questions; empty without one."""
    if comparison is None or comparison.paired is None:
        return {}
    p = comparison.paired
    models = {
        "question": "these trained models (the run's checkpoints; images are the unit)",
        "all_draws": [round(p.strict_a, 4), round(p.strict_b, 4)],
        "all_draws_difference": round(p.interval.estimate, 4),
        "all_draws_ci95": [round(p.interval.low, 4), round(p.interval.high, 4)],
        "sign_test_images": [p.model.a_better, p.model.b_better],
        "p_holm": p.model_holm,
        "draw_mean": [round(p.mean_a, 4), round(p.mean_b, 4)],
        "draw_mean_difference": round(p.mean_interval.estimate, 4),
        "draw_mean_ci95": [round(p.mean_interval.low, 4), round(p.mean_interval.high, 4)],
        "draw_mean_p_holm": p.model_mean_holm,
        "outcome": p.outcome(MODELS),
        "draw_mean_outcome": p.outcome(MODELS, DRAW_MEAN),
        "detectable_difference": round(p.detectable, 4),
    }
    if p.method is None:
        method = {
            "question": "the method (training seeds are the unit)",
            "outcome": "undecided",
            "why": f"one training seed; run several, e.g. {SEEDS_CONFIG}",
        }
    else:
        power, needed = p.method_power()
        method = {
            "question": "the method (training seeds are the unit)",
            "seeds": p.method.seeds,
            "images": p.method.images,
            "attacks": list(p.method_attacks),
            "all_draws_difference": round(p.method.mean, 4),
            "all_draws_ci95": [round(p.method.low, 4), round(p.method.high, 4)],
            "per_seed": [round(d, 4) for d in p.method.seed_means],
            "p_holm": p.method_holm,
            "draw_mean_difference": round(p.method_mean.mean, 4),
            "draw_mean_ci95": [round(p.method_mean.low, 4), round(p.method_mean.high, 4)],
            "draw_mean_p_holm": p.method_mean_holm,
            "outcome": p.outcome(METHOD),
            "draw_mean_outcome": p.outcome(METHOD, DRAW_MEAN),
            "power_at_observed": _rounded(power),
            "seeds_for_80_percent_power": needed,
        }
    return {
        "label": comparison.label,
        "images": p.images,
        "seeds": p.seeds,
        "in_doubt": doubted,
        METHOD: method,
        MODELS: models,
    }


def _headline_lines(comparison: Comparison, doubt: list[str], lead: str = MODELS) -> list[str]:
    marker = f" **IN DOUBT** ({'; '.join(doubt)}): read as upper bounds." if doubt else ""
    if comparison.paired is None:
        return [f"**Headline, AToP vs AP:** {comparison.text(MODELS)}.{marker}"]
    p = comparison.paired
    if p.method is None:
        method = (
            "**undecided**: one training seed compares two trained models, not the methods that trained them "
            f"(trained weights differ between CPUs, so a one-seed verdict can flip on another machine). "
            f"`{SEEDS_CONFIG}` trains several seeds and decides it."
        )
    else:
        outcome = p.outcome(METHOD)
        words = {
            "higher": "**AToP's fine-tuning makes the defense more robust**",
            "lower": "**AToP's fine-tuning makes the defense LESS robust**",
        }
        if outcome in words:
            decided = words[outcome]
        else:
            power, needed = p.method_power()
            more = f"about {needed} seeds would give 80 %" if needed else "more than 64 seeds would be needed"
            decided = (
                f"**undecided**: no detectable difference; {p.method.seeds} seeds give power {power:.2f} at the observed "
                f"difference ({more}; `{SEEDS_CONFIG}` trains more)"
            )
        method = f"{decided}. {p.method_text()}."
    model_outcome = p.outcome(MODELS)
    model_words = {
        "higher": "this run's AToP model is more robust than its AP model",
        "lower": "this run's AToP model is LESS robust than its AP model",
        "none": f"no detectable difference (the run could detect {100 * p.detectable:.1f} pp or more at 80 % power "
        "after Holm)",
    }[model_outcome]
    disagree = "" if p.outcome(MODELS, DRAW_MEAN) == model_outcome else f" The {SECONDARY} disagrees."
    bullets = {
        METHOD: f"- *The method* (does fine-tuning help? training seeds are the unit): {method}",
        MODELS: (
            f"- *These trained models* (this run's checkpoints; images are the unit): {model_words}.{disagree} "
            f"{p.model_text()}."
        ),
    }
    other = MODELS if lead == METHOD else METHOD
    return [
        f"**Headline, AToP vs AP** ({comparison.label}, same {p.units()}).{marker}",
        "",
        bullets[lead] + " *(leads the verdict)*",
        bullets[other],
    ]


def _verdicts_text(claim: Claim, lead: str) -> str:
    """``The method: undecided; these trained models: supported``, the leading question first."""
    words = {METHOD: "the method", MODELS: "these trained models"}
    order = (lead, MODELS if lead == METHOD else METHOD)
    text = "; ".join(f"{words[level]}: {VERDICT_WORDS[claim.verdicts[level]]}" for level in order)
    return text[0].upper() + text[1:]


def summary_markdown(
    experiment: str,
    dataset: str,
    frame: pd.DataFrame,
    judged: list[Claim],
    missing: list[str],
    problems: list[str],
    cross_checks: list[dict] = (),
    overfitting: list[str] = (),
    lead: str = MODELS,
) -> str:
    main = main_results(frame)
    n = main["n"].max()
    doubted, named = doubts(frame, cross_checks)
    lines = [f"# Summary: experiment `{experiment}` ({dataset})", ""]
    if named:
        lines += [
            (
                f"**{len(named)} check{'s' if len(named) > 1 else ''} failed or missing put{'' if len(named) > 1 else 's'} "
                "numbers in doubt: read these as upper bounds** (the attack may have been fooled by gradient "
                "obfuscation, so the defense may be weaker): " + "; ".join(named) + ". Verdicts resting on them are "
                "marked below."
            ),
            "",
        ]
    top = headline(judged, frame)
    if top is not None:
        doubt = list(dict.fromkeys(d.why for d in doubted if d.covers(top)))
        lines += [*_headline_lines(top, doubt, lead), ""]
    seeds = seeds_of(main)
    lines += [
        (
            f"{main['defense'].nunique()} defenses, {main['attack'].nunique()} attacks, {len(frame)} result files, "
            f"{f'{int(n)}' if pd.notna(n) else 'an unknown number of'} test images per result, "
            f"{len(seeds)} training seed{'s' if len(seeds) > 1 else ''}. Every claim gets two verdicts. *The method*: "
            "training seeds are the unit (a claim about a training procedure); per-(seed, image) differences go to a "
            "test with seed and image effects; one seed leaves it undecided. *These trained models*: the run's "
            "checkpoints, images are the unit: the exact sign test on per-image outcomes (McNemar's on one seed; "
            "each image's difference averaged over the seeds that share it) with an image bootstrap interval. Both "
            f"decide on the {PRIMARY} (an image counts only if all draws of one evaluation of a randomized defense "
            "classify it right, as an attacker who may resubmit sees it) under each defense's strongest attack (the "
            f"lowest of its per-attack accuracies), at {100 * ALPHA:.0f} % after Holm's correction over the report's "
            f"comparisons; the {SECONDARY} accuracy (one evaluation, the paper's metric) is tested alike and quoted. "
            "A claim over several settings holds only if every comparison does. docs/verdicts.md explains each rule "
            "and the simulations that check it."
        ),
        "",
    ]
    if dataset not in ("cifar10", "cifar100", "imagenette"):
        lines += [
            (
                f"**Dataset differs from the paper.** The paper reports CIFAR-10, CIFAR-100 and ImageNette; this run is "
                f"`{dataset}`. Claims below are judged on `{dataset}` (direction of effects only) and no published number is "
                "compared as a reproduction."
            ),
            "",
        ]
    lines += ["## The paper's claims", ""]
    for claim in judged:
        metric = f" ({claim.metric})" if claim.metric else ""
        doubt = [d.why for d in doubted if any(d.covers(c) for c in claim.comparisons)]
        flag = (
            f" Rests on numbers a failed or missing check puts in doubt ({'; '.join(dict.fromkeys(doubt))}): upper "
            "bounds."
            if doubt
            else ""
        )
        lines += [
            f"- **{_verdicts_text(claim, lead)}.** {claim.statement}{metric}",
            (
                f"  {claim.evidence[MODELS]}.{flag}"
                if claim.evidence[METHOD] == claim.evidence[MODELS]
                else f"  Method: {claim.evidence[METHOD]}. These models: {claim.evidence[MODELS]}.{flag}"
            ),
        ]
    averaged = eot_averaged(frame)
    lines += [
        "",
        "## Attacks",
        "",
        (
            "- EOT-averaged attacks (random-transform samples per gradient step, by defense): "
            + "; ".join(f"{attack}: EOT {eot}" for attack, eot in averaged.items())
            + ". Every other attack takes one sample per step."
            if averaged
            else "- No attack is EOT-averaged: every gradient step uses one random-transform sample."
        ),
        (
            "- Worst cases over attacks are the defense's strongest attack (the lowest of its per-attack accuracies, "
            "per seed), for every defense: each image's minimum over attacks would take the minimum of noisy "
            "fractions of a randomized defense's draws and handicap it."
        ),
    ]
    failed = frame[frame["failed_checks"] != ""]
    bad = [c for c in cross_checks if c.get("passed") is not True]
    lines += ["", "## Gradient-obfuscation checks", ""]
    if failed.empty and not bad and not named:
        recorded = int(frame["checks_recorded"].sum())
        lines.append(f"- No failed check ({recorded} of {len(frame)} results record their checks).")
    else:
        lines.append(
            f"- {len(failed)} results and {len(bad)} checks across results (attacks, sweeps, EOT sufficiency) FAILED "
            "or recorded no outcome:"
        )
    for row in failed.itertuples():
        lines.append(
            f"- FAILED for {row.defense} / {row.attack}: {row.failed_checks.replace(';', ', ')}; treat its number with suspicion."
        )
    if cross_checks:
        lines.append(
            f"- Across results (attacks, sweeps, EOT sufficiency): {len(cross_checks) - len(bad)} of {len(cross_checks)} checks passed."
        )
        lines += [
            f"- {'FAILED' if c.get('passed') is False else 'NO OUTCOME'} for {c.get('defense')}: {c.get('claim')} "
            f"({c.get('detail', '')})."
            for c in bad
        ]
    if overfitting:  # the adversarial training stages' monitors (report/overfitting.py)
        lines += ["", "## Overfitting of adversarial training", "", *overfitting]
    lines += ["", "## Missing", ""]
    if not missing and not problems:
        lines.append("- Nothing: every expected result is here.")
    shown = missing[:15]
    lines += [f"- {item}" for item in shown]
    if len(missing) > len(shown):
        lines.append(f"- ... and {len(missing) - len(shown)} more (see robustness.md).")
    lines += [f"- {problem}" for problem in problems]
    return "\n".join(lines) + "\n"


def markdown_to_rst(markdown: str, figure: Path | None = None) -> str:
    """summary.md as reStructuredText, for the first page of Snakemake's HTML report (report/workflow.rst).

    Only what summary_markdown writes: ``#``/``##`` headings, paragraphs, bullets with an indented
    continuation line, ``**bold**`` and `code`; underscores are escaped (``name_`` is a link in RST).
    ``figure`` (a PNG) follows the verdicts, embedded as a data URI: the HTML report is one file
    opened anywhere, and Snakemake's own ``embeddedimage`` directive leaves a relative link.
    """
    out = []
    for line in markdown.splitlines():
        heading = re.match(r"^(#{1,2}) (.*)$", line)
        if heading:
            title = _rst_inline(heading.group(2))
            out += [title, ("=" if len(heading.group(1)) == 1 else "-") * len(title)]
        else:
            out.append(_rst_inline(line))
    if figure is not None:
        data = base64.b64encode(Path(figure).read_bytes()).decode()
        # docutils caps input lines at 10,000 characters; a URI may span lines (whitespace is dropped)
        chunks = [data[i : i + 76] for i in range(0, len(data), 76)]
        out += ["", "Headline figure", "-" * 15, "", ".. image:: data:image/png;base64,"]
        out += [f"   {chunk}" for chunk in chunks] + ["   :width: 100%", "   :alt: headline figure", ""]
    return "\n".join(out) + "\n"


def _rst_inline(text: str) -> str:
    parts = re.split(r"(`[^`]*`)", text)  # code spans stay literal; everything else is escaped
    return "".join(
        f"`{part}`"
        if part.startswith("`") and part.endswith("`") and len(part) > 1
        else re.sub(r"([_\\|])", r"\\\1", part)
        for part in parts
    )
