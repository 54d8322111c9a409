"""The paper's claims, judged from the run's numbers, in plain words.

A difference counts only when the two 95 % intervals do not overlap (a
conservative test: the same images are scored for every defense, so a paired
test could detect smaller gaps). Claims the results cannot speak to say why.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from .results import RT_ORDER, main_results
from .tables import Estimate, attack_columns, clean_estimate, eot_averaged, full_gradient, worst_case

SUPPORTED, CONTRADICTED, MIXED, NOISE, CANNOT = (
    "supported",
    "contradicted",
    "mixed",
    "within noise",
    "cannot judge",
)
SHOWN = 3  # comparisons quoted per claim


@dataclass(frozen=True)
class Claim:
    key: str
    statement: str
    verdict: str
    evidence: str


@dataclass(frozen=True)
class Comparison:
    """``a`` is claimed to be higher than ``b``."""

    label: str
    a: Estimate
    b: Estimate

    @property
    def outcome(self) -> str:
        if self.a.beats(self.b):
            return "higher"
        if self.b.beats(self.a):
            return "lower"
        return "overlap"

    def text(self) -> str:
        words = {"higher": "higher beyond noise", "lower": "LOWER beyond noise", "overlap": "intervals overlap"}
        return f"{self.label}: {self.a.text()} vs {self.b.text()} ({words[self.outcome]})"


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
    counts = f"{higher} of {len(comparisons)} comparisons higher beyond noise, {lower} lower"
    # the one-page summary shows the clearest cases: lower ones first (they matter most), then the rest
    shown = sorted(comparisons, key=lambda c: ("lower", "higher", "overlap").index(c.outcome))[:SHOWN]
    more = f"; and {len(comparisons) - SHOWN} more" if len(comparisons) > SHOWN else ""
    return Claim(key, statement, verdict, counts + "; " + "; ".join(c.text() for c in shown) + more)


def _worst(frame: pd.DataFrame, defense: str, attacks: list[str]) -> Estimate | None:
    rows = full_gradient(frame)
    return worst_case(rows[(rows["defense"] == defense) & rows["attack"].isin(attacks)])


def _pairs(frame: pd.DataFrame, match) -> list[tuple[str, str]]:
    """(a, b) defense pairs for which ``match(setting_a, setting_b)`` holds."""
    settings = main_results(frame).drop_duplicates("defense").set_index("defense")
    return [
        (a, b) for a in settings.index for b in settings.index if a != b and match(settings.loc[a], settings.loc[b])
    ]


def _robust_comparisons(frame, pairs, attacks_of, scope: str) -> list[Comparison]:
    """Worst case over the attacks both defenses of a pair were run against."""
    full = full_gradient(frame)
    comparisons = []
    for a, b in pairs:
        attacks = attacks_of(a, b, full)
        ea, eb = _worst(frame, a, attacks), _worst(frame, b, attacks)
        if ea and eb:
            comparisons.append(Comparison(f"{a} vs {b}, worst case over {len(attacks)} {scope}attacks", ea, eb))
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
    out = [
        judge(
            "ft_improves_over_ap",
            "Fine-tuning the purifier (AToP) makes the defense more robust than purification alone (AP).",
            _robust_comparisons(frame, _pairs(frame, _same_setting("atop", "ap")), _common(any_label), ""),
            "no AToP / AP pair with the same purifier and RT has results",
        ),
        judge(
            "atop_over_standard",
            "AToP is more robust than the undefended classifier.",
            _robust_comparisons(frame, _pairs(frame, _kinds("atop", "standard")), _common(any_label), ""),
            "no AToP and standard results on the same attack",
        ),
        judge(
            "atop_generalises_beyond_at",
            "AToP generalises to unseen attacks: it beats adversarial training (AT) on attacks neither was trained on.",
            _robust_comparisons(frame, _pairs(frame, _kinds("atop", "at")), _common(("unseen",)), "unseen ")
            if labelled
            else [],
            no_labels if not labelled else "no AT defense with unseen-attack results next to AToP",
        ),
        judge(
            "ft_gain_holds_on_unseen",
            "Fine-tuning's gain over AP holds on unseen attacks (RT keeps FT from over-fitting to its attack).",
            _robust_comparisons(frame, _pairs(frame, _same_setting("atop", "ap")), _common(("unseen",)), "unseen ")
            if labelled
            else [],
            no_labels if not labelled else "no AToP / AP pair has unseen-attack results",
        ),
        judge(
            "atop_keeps_clean_accuracy_over_at",
            "AToP keeps a higher clean accuracy than adversarial training (AT).",
            _clean_comparisons(frame, _pairs(frame, _kinds("atop", "at"))),
            "no AT defense next to AToP",
        ),
        judge(
            "rt2_best",
            "RT2 (noise + mask) is the best random transform for AToP.",
            _robust_comparisons(frame, _pairs(frame, _rt2_against_other_rt), _common(any_label), ""),
            "AToP was not run with RT2 and another RT on the same purifier",
        ),
        judge(
            "gan_over_ae",
            "The GAN purifier is more robust than the AE purifier (same RT and FT).",
            _robust_comparisons(frame, _pairs(frame, _gan_against_ae), _common(any_label), ""),
            "the run has no GAN / AE pair",
        ),
        judge(
            "classifier_only_overstates",
            "Attacks on the classifier only (BPDA) overstate robustness: full-gradient attacks on the whole system are stronger.",
            gradient_pairs,
            "no classifier-only (BPDA) result next to a full-gradient one",
        ),
        _reproduces(reference, dataset),
    ]
    return out


def _clean_comparisons(frame, pairs) -> list[Comparison]:
    main = main_results(frame)
    comparisons = []
    for a, b in pairs:
        ea, eb = clean_estimate(main[main["defense"] == a]), clean_estimate(main[main["defense"] == b])
        if ea and eb:
            comparisons.append(Comparison(f"{a} vs {b}, clean", ea, eb))
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
    """Classifier-only vs full-gradient robust accuracy of the same defense and attack family."""
    main = main_results(frame)
    comparisons = []
    for (defense, family), bpda in main[main["gradient"] == "bpda"].groupby(["defense", "attack_family"]):
        full = main[(main["gradient"] == "full") & (main["defense"] == defense) & (main["attack_family"] == family)]
        upper, exact = worst_case(bpda), worst_case(full)
        if upper and exact:
            comparisons.append(Comparison(f"{defense} {family}: classifier-only vs full gradient", upper, exact))
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
    )


VERDICT_WORDS = {
    SUPPORTED: "The run supports this",
    CONTRADICTED: "The run contradicts this",
    MIXED: "The run gives mixed evidence",
    NOISE: "The run cannot tell: the differences are within noise",
    CANNOT: "The run cannot judge this",
}


def summary_markdown(
    experiment: str,
    dataset: str,
    frame: pd.DataFrame,
    judged: list[Claim],
    missing: list[str],
    problems: list[str],
    cross_checks: list[dict] = (),
) -> str:
    main = main_results(frame)
    n = main["n"].max()
    lines = [
        f"# Summary: experiment `{experiment}` ({dataset})",
        "",
        (
            f"{main['defense'].nunique()} defenses, {main['attack'].nunique()} attacks, "
            f"{len(frame)} result files, {f'{int(n)}' if pd.notna(n) else 'an unknown number of'} test images per result. "
            "A difference between defenses counts only when the two 95 % intervals do not overlap."
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
        lines += [f"- **{VERDICT_WORDS[claim.verdict]}:** {claim.statement}", f"  {claim.evidence}."]
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
        lines.append(f"- {len(failed)} results and {len(bad)} cross-attack / sweep checks FAILED:")
    for row in failed.itertuples():
        lines.append(
            f"- FAILED for {row.defense} / {row.attack}: {row.failed_checks.replace(';', ', ')}; treat its number with suspicion."
        )
    if cross_checks:
        lines.append(
            f"- Across attacks and sweeps: {len(cross_checks) - len(bad)} of {len(cross_checks)} checks passed."
        )
        lines += [f"- FAILED for {c.get('defense')}: {c['claim']} ({c['detail']})." for c in bad]
    lines += ["", "## Missing", ""]
    if not missing and not problems:
        lines.append("- Nothing: every expected result is here.")
    shown = missing[:15]
    lines += [f"- {item}" for item in shown]
    if len(missing) > len(shown):
        lines.append(f"- ... and {len(missing) - len(shown)} more (see robustness.md).")
    lines += [f"- {problem}" for problem in problems]
    return "\n".join(lines) + "\n"
