"""The paper's claims (claims.py), judged from the run's comparisons, and what failed checks put in doubt.

Every claim is judged the same way on both questions (comparisons.py): a claim about several
settings holds only if every comparison does ("partly supported, k of n" otherwise: universal),
with one Holm family over all the report's comparisons. Claims the results cannot speak to say
why; with one training seed the method is undecided, and the verdict says what would decide it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from ..claims import CLAIMS, ClaimSpec, matches
from .comparisons import (
    METHOD,
    MODELS,
    PRIMARY,
    SECONDARY,
    Comparison,
    clean_comparisons,
    common_attacks,
    defense_pairs,
    robust_comparisons,
    with_holm,
)
from .estimates import DRAW_MEAN, seeds_of
from .results import full_gradient, main_results
from .tables import headline_rt

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
SHOWN = 3  # comparisons quoted per claim
SEEDS_CONFIG = "config/digits-seeds.yaml"  # the default with several training seeds


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


def _comparisons(frame: pd.DataFrame, spec: ClaimSpec, gradient_pairs: list[Comparison], labelled: bool):
    """The comparisons that test one claim (claims.py), and what to say when there are none."""
    if spec.metric == "gradient":
        return gradient_pairs, spec.why_not
    if spec.needs_labels and not labelled:
        return [], "the results carry no seen/unseen labels"
    pairs = defense_pairs(frame, lambda a, b: matches(spec, a, b))
    if spec.metric == "clean":
        return clean_comparisons(frame, pairs), spec.why_not
    scope = "" if None in spec.attacks else "unseen "
    return robust_comparisons(frame, pairs, common_attacks(spec.attacks), scope), spec.why_not


def claims(
    frame: pd.DataFrame,
    gradient_pairs: list[Comparison],
    reference: pd.DataFrame,
    dataset: str,
    extra: tuple[ClaimSpec, ...] = (),
) -> list[Claim]:
    """The paper's claims and ``extra`` ones (a user's: claims.user_claims), judged in one Holm family."""
    labelled = bool(full_gradient(frame)["seen"].notna().any())
    tested = [(spec, *_comparisons(frame, spec, gradient_pairs, labelled)) for spec in (*CLAIMS, *extra)]
    # one family for Holm: every paired comparison of the report
    family = with_holm([c for _, comparisons, _ in tested for c in comparisons])
    judged, at = [], 0
    for spec, comparisons, why_not in tested:
        judged.append(judge(spec.key, spec.statement, family[at : at + len(comparisons)], why_not))
        at += len(comparisons)
    return [*judged, _reproduces(reference, dataset, len(seeds_of(main_results(frame))))]


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
