"""The paper's claims, judged from the run's numbers, in plain words.

Every defense and attack is scored on the same images, so two defenses are compared image by
image (src/atop/stats.py). A verdict is decided on the worst case over draws (an image counts only
if every draw of the randomized defense classifies it right: the attacker may resubmit) by the
exact McNemar test, Holm-adjusted over every comparison of the report. The draw-mean accuracy
(one evaluation, the paper's metric) is compared by a paired bootstrap over images and the draws
within each image; its difference and 95 % interval are quoted, and a verdict says when the
draw-mean points elsewhere. A test that finds nothing states the smallest difference the run
could have detected. Results without per-image outcomes (older files) fall back to whether two
95 % intervals overlap, and say so. Claims the results cannot speak to say why.
"""

from __future__ import annotations

import base64
import math
import re
import zlib
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from ..stats import (
    BootstrapDifference,
    PairedTest,
    aligned,
    all_draws_right,
    detectable_difference,
    holm,
    paired_draw_bootstrap,
)
from .results import RT_ORDER, main_results
from .tables import (
    Estimate,
    Outcomes,
    attack_columns,
    clean_estimate,
    clean_outcomes,
    eot_averaged,
    full_gradient,
    headline_rt,
    paired_all_draws,
    robust_outcomes,
    seeds_of,
    worst_case,
)

SUPPORTED, CONTRADICTED, MIXED, NOISE, CANNOT, SPLIT = (
    "supported",
    "contradicted",
    "mixed",
    "no detectable difference",
    "cannot judge",
    "not consistent across seeds",
)
SHOWN = 3  # comparisons quoted per claim
ALPHA = 0.05  # family-wise, after Holm's correction
RESAMPLES = 2000  # paired bootstrap resamples per comparison
PRIMARY = "worst case over draws"  # the metric verdicts are decided on
SECONDARY = "draw-mean"


@dataclass(frozen=True)
class Paired:
    """Two defenses on the images both were scored on: exact McNemar on all-draws-right, bootstrap on draw-means."""

    n: int
    mcnemar: PairedTest  # per image: right on every draw (worst case over draws)
    strict_a: float
    strict_b: float
    mean_a: float
    mean_b: float
    bootstrap: BootstrapDifference  # draw-mean difference, resampling images and draws
    mcnemar_holm: float = math.nan  # filled in once the report's whole family is known
    bootstrap_holm: float = math.nan
    # with several training seeds: each seed's worst-case-over-draws difference (a - b), in seed order
    seed_differences: tuple[float, ...] = ()

    @property
    def pooled_outcome(self) -> str:
        """The direction of the pooled (over seeds: stratified) exact McNemar test, Holm-adjusted."""
        return _direction(self.mcnemar_holm, self.mcnemar.a_better - self.mcnemar.b_better)

    @property
    def consistent(self) -> bool:
        """Every training seed's difference points the pooled test's way (trivially so for one seed)."""
        sign = {"higher": 1, "lower": -1}.get(self.pooled_outcome)
        return sign is None or all(d * sign > 0 for d in self.seed_differences)

    @property
    def detectable(self) -> float:
        """Smallest worst-case difference (fraction) the test detects with 80 % power at 5 %."""
        return detectable_difference(self.mcnemar.discordant, self.n)

    @property
    def outcome(self) -> str:
        """The verdict's metric: worst case over draws, Holm-adjusted exact McNemar; across seeds it
        must also hold in every seed, else no direction is claimed."""
        return self.pooled_outcome if self.consistent else "none"

    @property
    def mean_outcome(self) -> str:
        return _direction(self.bootstrap_holm, self.bootstrap.difference)

    def text(self) -> str:
        boot, test = self.bootstrap, self.mcnemar
        seeds = len(self.seed_differences)
        units = _units(self)
        per_seed = (
            f"; per seed {', '.join(f'{100 * d:+.1f}' for d in self.seed_differences)} pp ({PRIMARY})"
            if seeds > 1
            else ""
        )
        return (
            f"{units}; {PRIMARY} {100 * self.strict_a:.1f} vs {100 * self.strict_b:.1f} (McNemar "
            f"{test.a_better}:{test.b_better} discordant, Holm p {p_text(self.mcnemar_holm)}); {SECONDARY} "
            f"{100 * self.mean_a:.1f} vs {100 * self.mean_b:.1f}, {100 * boot.difference:+.1f} pp "
            f"[{100 * boot.low:+.1f}, {100 * boot.high:+.1f}] (Holm p {p_text(self.bootstrap_holm)}){per_seed}"
        )


def _units(p: Paired) -> str:
    """``256 images``, or with several training seeds ``256 images x 3 seeds``."""
    seeds = len(p.seed_differences)
    return f"{p.n // seeds} images x {seeds} seeds" if seeds > 1 else f"{p.n} images"


def p_text(p: float) -> str:
    return "< 0.0001" if p < 1e-4 else f"= {p:.2g}"


def _direction(p_value: float, sign: float) -> str:
    if not p_value < ALPHA or sign == 0:
        return "none"
    return "higher" if sign > 0 else "lower"


def paired(a: Outcomes | None, b: Outcomes | None, seed: int = 0) -> Paired | None:
    """Paired tests of ``a`` against ``b`` on the images both scored; None without per-image outcomes."""
    if a is None or b is None:
        return None
    test = paired_all_draws(a, b)
    if test is None:
        return None
    common, ia, ib = aligned(a.indices, range(len(a.indices)), b.indices, range(len(b.indices)))
    fa, fb = a.fractions[:, ia], b.fractions[:, ib]
    right_a, right_b = all_draws_right(fa), all_draws_right(fb)
    groups = None
    seed_differences: tuple[float, ...] = ()
    if a.groups is not None:
        groups = [a.groups[i] for i in ia]
        common_outcomes = Outcomes(tuple(common), fa, a.draws)
        seed_differences = tuple(common_outcomes.per_seed(right_a.astype(float) - right_b.astype(float)).values())
    return Paired(
        n=len(common),
        mcnemar=test,
        strict_a=float(right_a.mean()),
        strict_b=float(right_b.mean()),
        mean_a=float(fa.min(axis=0).mean()),
        mean_b=float(fb.min(axis=0).mean()),
        bootstrap=paired_draw_bootstrap(fa, fb, a.draws, b.draws, resamples=RESAMPLES, seed=seed, groups=groups),
        seed_differences=seed_differences,
    )


@dataclass(frozen=True)
class Claim:
    key: str
    statement: str
    verdict: str
    evidence: str
    metric: str = ""  # which accuracy the verdict is decided on, and whether the other agrees
    comparisons: tuple = ()


@dataclass(frozen=True)
class Comparison:
    """``a`` is claimed to be higher than ``b``; ``paired`` decides when per-image outcomes exist."""

    label: str
    a: Estimate
    b: Estimate
    paired: Paired | None = None
    defenses: tuple[str, ...] = ()
    attacks: tuple[str, ...] = ()  # empty: clean accuracy

    @property
    def outcome(self) -> str:
        if self.paired is not None:
            return self.paired.outcome
        if self.a.beats(self.b):
            return "higher"
        if self.b.beats(self.a):
            return "lower"
        return "overlap"

    def verdict_text(self) -> str:
        if self.paired is None:
            words = {"higher": "higher beyond noise", "lower": "LOWER beyond noise", "overlap": "intervals overlap"}
            return words[self.outcome] + "; unpaired: no per-image outcomes"
        words = {
            "higher": "higher",
            "lower": "LOWER",
            "none": f"no detectable difference (could detect {100 * self.paired.detectable:.1f} pp or more)",
        }
        text = words[self.outcome]
        if not self.paired.consistent:
            text = (
                f"no direction claimed: the seeds pooled say {self.paired.pooled_outcome.upper()}, "
                "but not every training seed agrees"
            )
        if self.paired.mean_outcome != self.outcome:
            text += (
                f"; the {SECONDARY} disagrees: "
                + {"higher": "higher", "lower": "LOWER", "none": "no difference"}[self.paired.mean_outcome]
            )
        return text

    def text(self) -> str:
        if self.paired is None:
            return f"{self.label}: {self.a.text()} vs {self.b.text()} ({self.verdict_text()})"
        return f"{self.label}: {self.paired.text()}: {self.verdict_text()}"


def with_holm(comparisons: list[Comparison]) -> list[Comparison]:
    """The comparisons with Holm-adjusted p-values over the whole list (one report = one family per metric)."""
    at = [i for i, c in enumerate(comparisons) if c.paired is not None]
    strict = holm([comparisons[i].paired.mcnemar.p_value for i in at])
    mean = holm([comparisons[i].paired.bootstrap.p_value for i in at])
    out = list(comparisons)
    for i, p_strict, p_mean in zip(at, strict, mean, strict=True):
        out[i] = replace(out[i], paired=replace(out[i].paired, mcnemar_holm=p_strict, bootstrap_holm=p_mean))
    return out


def _metric_text(comparisons: list[Comparison]) -> str:
    if not comparisons:
        return ""
    if all(c.paired is None for c in comparisons):
        return "verdict on the draw-mean; unpaired (no per-image outcomes): the two 95 % intervals must not overlap"
    disagree = sum(c.paired is not None and c.paired.mean_outcome != c.outcome for c in comparisons)
    agrees = (
        "the draw-mean agrees" if not disagree else f"the {SECONDARY} DISAGREES in {disagree} of {len(comparisons)}"
    )
    return f"verdict on the {PRIMARY} (exact McNemar, Holm-adjusted); {agrees}"


def judge(key: str, statement: str, comparisons: list[Comparison], why_not: str) -> Claim:
    if not comparisons:
        return Claim(key, statement, CANNOT, why_not)
    outcomes = [c.outcome for c in comparisons]
    higher, lower = outcomes.count("higher"), outcomes.count("lower")
    if higher and lower:
        verdict = MIXED
    elif higher:
        verdict = SUPPORTED
    elif lower:
        verdict = CONTRADICTED
    else:
        verdict = NOISE
    counts = f"{higher} of {len(comparisons)} comparisons higher, {lower} lower"
    detectable = [c.paired.detectable for c in comparisons if c.paired is not None]
    split = sum(c.paired is not None and not c.paired.consistent for c in comparisons)
    if verdict == NOISE and split:
        verdict = SPLIT
        counts = f"{split} comparisons point one way pooled over training seeds but not in every seed; " + counts
    elif verdict == NOISE and detectable:
        counts = f"the run could detect differences of {100 * max(detectable):.1f} pp or more (80 % power); " + counts
    # the one-page summary shows the clearest cases: lower ones first (they matter most), then the rest
    rank = ("lower", "higher", "none", "overlap")
    shown = sorted(comparisons, key=lambda c: rank.index(c.outcome))[:SHOWN]
    more = f"; and {len(comparisons) - SHOWN} more" if len(comparisons) > SHOWN else ""
    return Claim(
        key,
        statement,
        verdict,
        counts + "; " + "; ".join(c.text() for c in shown) + more,
        _metric_text(comparisons),
        tuple(comparisons),
    )


def _seed(label: str) -> int:
    """A bootstrap seed of the comparison itself: the same inputs give the same interval in any report."""
    return zlib.crc32(label.encode())


def _compare(label: str, defenses, attacks, rows_a: pd.DataFrame, rows_b: pd.DataFrame, clean=False):
    estimate, outcomes = (clean_estimate, clean_outcomes) if clean else (worst_case, robust_outcomes)
    ea, eb = estimate(rows_a), estimate(rows_b)
    if not (ea and eb):
        return None
    test = paired(outcomes(rows_a), outcomes(rows_b), _seed(label))
    return Comparison(label, ea, eb, test, tuple(defenses), tuple(attacks))


def _pairs(frame: pd.DataFrame, match) -> list[tuple[str, str]]:
    """(a, b) defense pairs for which ``match(setting_a, setting_b)`` holds."""
    settings = main_results(frame).drop_duplicates("defense").set_index("defense")
    return [
        (a, b) for a in settings.index for b in settings.index if a != b and match(settings.loc[a], settings.loc[b])
    ]


def _robust_comparisons(frame, pairs, attacks_of, scope: str) -> list[Comparison]:
    """Worst case over the attacks both defenses of a pair were run against, image by image."""
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


def _same(a, b, key: str) -> bool:
    return (pd.isna(a[key]) and pd.isna(b[key])) or a[key] == b[key]


def _same_setting(kind_a, kind_b):
    return lambda a, b: a["kind"] == kind_a and b["kind"] == kind_b and _same(a, b, "purifier") and _same(a, b, "rt")


def _kinds(kind_a, kind_b):
    return lambda a, b: a["kind"] == kind_a and b["kind"] == kind_b


def claims(frame: pd.DataFrame, gradient_pairs: list[Comparison], reference: pd.DataFrame, dataset: str) -> list[Claim]:
    any_label = (None, "seen", "unseen")
    labelled = full_gradient(frame)["seen"].notna().any()
    no_labels = "the results carry no seen/unseen labels"
    specs = [
        (
            "ft_improves_over_ap",
            "Fine-tuning the purifier (AToP) makes the defense more robust than purification alone (AP).",
            _robust_comparisons(frame, _pairs(frame, _same_setting("atop", "ap")), _common(any_label), ""),
            "no AToP / AP pair with the same purifier and RT has results",
        ),
        (
            "atop_over_standard",
            "AToP is more robust than the undefended classifier.",
            _robust_comparisons(frame, _pairs(frame, _kinds("atop", "standard")), _common(any_label), ""),
            "no AToP and standard results on the same attack",
        ),
        (
            "atop_generalises_beyond_at",
            "AToP generalises to unseen attacks: it beats adversarial training (AT) on attacks neither was trained on.",
            _robust_comparisons(frame, _pairs(frame, _kinds("atop", "at")), _common(("unseen",)), "unseen ")
            if labelled
            else [],
            no_labels if not labelled else "no AT defense with unseen-attack results next to AToP",
        ),
        (
            "ft_gain_holds_on_unseen",
            "Fine-tuning's gain over AP holds on unseen attacks (RT keeps FT from over-fitting to its attack).",
            _robust_comparisons(frame, _pairs(frame, _same_setting("atop", "ap")), _common(("unseen",)), "unseen ")
            if labelled
            else [],
            no_labels if not labelled else "no AToP / AP pair has unseen-attack results",
        ),
        (
            "atop_keeps_clean_accuracy_over_at",
            "AToP keeps a higher clean accuracy than adversarial training (AT).",
            _clean_comparisons(frame, _pairs(frame, _kinds("atop", "at"))),
            "no AT defense next to AToP",
        ),
        (
            "rt2_best",
            "RT2 (noise + mask) is the best random transform for AToP.",
            _robust_comparisons(frame, _pairs(frame, _rt2_against_other_rt), _common(any_label), ""),
            "AToP was not run with RT2 and another RT on the same purifier",
        ),
        (
            "gan_over_ae",
            "The GAN purifier is more robust than the AE purifier (same RT and FT).",
            _robust_comparisons(frame, _pairs(frame, _gan_against_ae), _common(any_label), ""),
            "the run has no GAN / AE pair",
        ),
        (
            "classifier_only_overstates",
            "Attacks on the classifier only (BPDA) overstate robustness: full-gradient attacks on the whole system are stronger.",
            gradient_pairs,
            "no classifier-only (BPDA) result next to a full-gradient one",
        ),
    ]
    # one family for Holm: every paired comparison of the report
    family = with_holm([c for _, _, comparisons, _ in specs for c in comparisons])
    judged, at = [], 0
    for key, statement, comparisons, why_not in specs:
        judged.append(judge(key, statement, family[at : at + len(comparisons)], why_not))
        at += len(comparisons)
    return [*judged, _reproduces(reference, dataset)]


def _clean_comparisons(frame, pairs) -> list[Comparison]:
    main = main_results(frame)
    comparisons = []
    for a, b in pairs:
        found = _compare(f"{a} vs {b}, clean", (a, b), (), main[main["defense"] == a], main[main["defense"] == b], True)
        if found:
            comparisons.append(found)
    return comparisons


def _rt2_against_other_rt(a, b) -> bool:
    return (
        a["kind"] == b["kind"] == "atop"
        and _same(a, b, "purifier")
        and a["rt"] == "rt2"
        and b["rt"] in RT_ORDER
        and b["rt"] != "rt2"
    )


def _gan_against_ae(a, b) -> bool:
    return (
        a["kind"] == b["kind"]
        and a["kind"] in ("ap", "atop")
        and _same(a, b, "rt")
        and (a["purifier"], b["purifier"]) == ("gan", "ae")
    )


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


def _reproduces(joined: pd.DataFrame, dataset: str) -> Claim:
    statement = "The run reproduces the paper's published numbers (each inside the run's 95 % interval)."
    comparable = joined[joined["status"] == "comparable"]
    if comparable.empty:
        datasets = ", ".join(sorted(set(joined["paper_dataset"]))) or "none"
        shown = int(joined["run_value"].notna().sum())
        why = (
            f"no paper number is comparable: the paper reports {datasets}, this run is {dataset}"
            if dataset not in set(joined["paper_dataset"])
            else f"the run has no result under the paper's settings for {dataset}"
        )
        return Claim(
            "reproduces_paper_numbers",
            statement,
            CANNOT,
            f"{why} ({shown} run numbers are shown next to paper numbers for direction only)",
        )
    inside = comparable["paper_within_ci95"] == "yes"
    verdict = SUPPORTED if inside.all() else CONTRADICTED if not inside.any() else MIXED
    outside = comparable[~inside]
    details = "; ".join(
        f"{r.paper_setting} / {r.run_defense} ({r.metric}): run {r.run_value:.2f} [{r.run_ci95_low:.2f}, "
        f"{r.run_ci95_high:.2f}] vs paper {r.paper_value:.2f}"
        for r in outside.head(SHOWN).itertuples()
    )
    details = (
        f"outside: {details}" + (f"; and {len(outside) - SHOWN} more" if len(outside) > SHOWN else "")
        if details
        else "all inside"
    )
    return Claim(
        "reproduces_paper_numbers",
        statement,
        verdict,
        f"{int(inside.sum())} of {len(comparable)} paper numbers inside the run's interval; {details}",
        f"verdict on the {SECONDARY} (the paper's metric) and its 95 % Wilson interval",
    )


VERDICT_WORDS = {
    SUPPORTED: "The run supports this",
    CONTRADICTED: "The run contradicts this",
    MIXED: "The run gives mixed evidence",
    NOISE: "No detectable difference",
    SPLIT: "The training seeds disagree",
    CANNOT: "The run cannot judge this",
}


@dataclass(frozen=True)
class Doubt:
    """Numbers a failed check puts in doubt: one result (``attack``) or every robust number of a defense."""

    defense: str | None  # None: every defense
    attack: str | None  # None: every attack
    why: str

    def covers(self, comparison: Comparison) -> bool:
        if not comparison.attacks:  # clean accuracy: no attack to doubt
            return False
        defense = self.defense is None or self.defense in comparison.defenses
        return defense and (self.attack is None or self.attack in comparison.attacks)


def doubts(frame: pd.DataFrame, cross_checks) -> tuple[list[Doubt], list[str]]:
    """What failed checks put in doubt, and the same as phrases naming the numbers (marked upper bounds)."""
    found, named = [], []
    several = len(seeds_of(frame)) > 1
    for row in frame[frame["failed_checks"] != ""].itertuples():
        value = f" (seed {int(row.seed)})" if several and pd.notna(row.seed) else ""
        value += "" if pd.isna(row.robust_accuracy) else f" {100 * row.robust_accuracy:.1f}"
        if not pd.isna(row.robust_strict_accuracy):
            value += f" ({PRIMARY} {100 * row.robust_strict_accuracy:.1f})"
        found.append(Doubt(row.defense, row.attack, row.failed_checks.replace(";", ", ")))
        named.append(f"robust accuracy of {row.defense} / {row.attack}{value} ({found[-1].why})")
    for check in cross_checks:
        if not check["passed"]:
            # a check of one result (EOT sufficiency) names its attack; cross-attack checks doubt the defense
            found.append(Doubt(check.get("defense"), check.get("attack"), check["claim"]))
            if check.get("attack"):
                named.append(f"robust accuracy of {check['defense']} / {check['attack']} ({check['claim']})")
            else:
                whose = f"of {check['defense']}" if check.get("defense") else "of every defense"
                named.append(f"every robust accuracy {whose} ({check['claim']})")
    return found, list(dict.fromkeys(named))  # a check failing under several seeds is named once


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


def comparison_metrics(comparison: Comparison | None) -> dict:
    """A paired comparison as numbers (fractions) for metrics.json; empty without one."""
    if comparison is None or comparison.paired is None:
        return {}
    p = comparison.paired
    return {
        "label": comparison.label,
        "n": p.n,
        "draw_mean_difference": round(p.bootstrap.difference, 4),
        "draw_mean_ci95": [round(p.bootstrap.low, 4), round(p.bootstrap.high, 4)],
        "draw_mean_p_holm": p.bootstrap_holm,
        "all_draws": [round(p.strict_a, 4), round(p.strict_b, 4)],
        "mcnemar_discordant": [p.mcnemar.a_better, p.mcnemar.b_better],
        "mcnemar_p_holm": p.mcnemar_holm,
        "outcome": comparison.outcome,
        "draw_mean_outcome": p.mean_outcome,
        "detectable_difference": round(p.detectable, 4),
    }


def _headline_text(comparison: Comparison) -> str:
    if comparison.paired is None:
        return f"{comparison.text()}."
    p = comparison.paired
    boot = p.bootstrap
    verdict = {
        "higher": "AToP is more robust",
        "lower": "AToP is LESS robust",
        "none": f"no detectable difference: the run could detect differences of {100 * p.detectable:.1f} pp or more "
        "(80 % power)",
    }[comparison.outcome]
    disagree = "" if p.mean_outcome == comparison.outcome else f" The {SECONDARY} disagrees ({p.mean_outcome})."
    return (
        f"{comparison.label}, same {_units(p)}. Draw-mean robust accuracy {100 * p.mean_a:.1f} vs "
        f"{100 * p.mean_b:.1f}: difference {100 * boot.difference:+.1f} pp, 95 % interval "
        f"[{100 * boot.low:+.1f}, {100 * boot.high:+.1f}] (paired bootstrap over images and draws). "
        f"{PRIMARY.capitalize()}: {100 * p.strict_a:.1f} vs {100 * p.strict_b:.1f}; exact McNemar test on the "
        f"{p.mcnemar.discordant} discordant images ({p.mcnemar.a_better} vs {p.mcnemar.b_better}), Holm-adjusted "
        f"p {p_text(p.mcnemar_holm)}. Verdict ({PRIMARY}): {verdict}.{disagree}"
    )


def summary_markdown(
    experiment: str,
    dataset: str,
    frame: pd.DataFrame,
    judged: list[Claim],
    missing: list[str],
    problems: list[str],
    cross_checks: list[dict] = (),
    overfitting: list[str] = (),
) -> str:
    main = main_results(frame)
    n = main["n"].max()
    doubted, named = doubts(frame, cross_checks)
    lines = [f"# Summary: experiment `{experiment}` ({dataset})", ""]
    if named:
        lines += [
            (
                f"**{len(named)} failed check{'s' if len(named) > 1 else ''} put{'' if len(named) > 1 else 's'} "
                "numbers in doubt: read these as upper bounds** (the attack may have been fooled by gradient "
                "obfuscation, so the defense may be weaker): " + "; ".join(named) + ". Verdicts resting on them are "
                "marked below."
            ),
            "",
        ]
    top = headline(judged, frame)
    if top is not None:
        lines += [f"**Headline, AToP vs AP:** {_headline_text(top)}", ""]
    lines += [
        (
            f"{main['defense'].nunique()} defenses, {main['attack'].nunique()} attacks, "
            f"{len(frame)} result files, {f'{int(n)}' if pd.notna(n) else 'an unknown number of'} test images per result. "
            f"Two defenses are compared on the same images: a verdict is decided on the {PRIMARY} (an image counts "
            "only if every draw of a randomized defense classifies it right, as an attacker who may resubmit sees it) "
            f"by the exact McNemar test at {100 * ALPHA:.0f} % after Holm's correction over the report's comparisons; "
            f"the {SECONDARY} accuracy (one evaluation, the paper's metric) by a paired bootstrap over images and "
            "draws (difference in pp with its 95 % interval). McNemar a:b counts the images only the first / only "
            "the second defense keeps right on every draw."
        ),
        "",
    ]
    seeds = seeds_of(main)
    if len(seeds) > 1:
        lines += [
            (
                f"**{len(seeds)} training seeds** ({', '.join(str(int(s)) for s in seeds)}): each seed trained its own "
                "classifier, AT baseline, purifiers and fine-tuning, and was scored on the same images. Every number "
                "is the mean over the seeds ± their standard deviation, its interval a bootstrap over seeds and then "
                "images. A comparison pools the seeds: the exact McNemar test stratified by seed (the discordant "
                "images of every seed summed: under no difference each is equally likely to favour either defense, "
                "whatever the seed), and a hierarchical bootstrap (seeds, then images, then draws) for the draw-mean. "
                "A direction is claimed only if it also holds in every seed; otherwise the verdict says the seeds "
                "disagree."
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
            f" Rests on numbers a failed check puts in doubt ({'; '.join(dict.fromkeys(doubt))}): upper bounds."
            if doubt
            else ""
        )
        lines += [f"- **{VERDICT_WORDS[claim.verdict]}:** {claim.statement}{metric}", f"  {claim.evidence}.{flag}"]
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
            "- Worst cases are per image (AutoAttack's protocol): an image counts with the lowest fraction of draws "
            "any of the attacks left right."
        ),
    ]
    failed = frame[frame["failed_checks"] != ""]
    bad = [c for c in cross_checks if not c["passed"]]
    lines += ["", "## Gradient-obfuscation checks", ""]
    if failed.empty and not bad:
        recorded = int(frame["checks_recorded"].sum())
        lines.append(f"- No failed check ({recorded} of {len(frame)} results record their checks).")
    else:
        lines.append(
            f"- {len(failed)} results and {len(bad)} checks across results (attacks, sweeps, EOT sufficiency) FAILED:"
        )
    for row in failed.itertuples():
        lines.append(
            f"- FAILED for {row.defense} / {row.attack}: {row.failed_checks.replace(';', ', ')}; treat its number with suspicion."
        )
    if cross_checks:
        lines.append(
            f"- Across results (attacks, sweeps, EOT sufficiency): {len(cross_checks) - len(bad)} of {len(cross_checks)} checks passed."
        )
        lines += [f"- FAILED for {c.get('defense')}: {c['claim']} ({c['detail']})." for c in bad]
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
