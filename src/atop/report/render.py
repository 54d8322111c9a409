"""The report's text: summary.md (the verdicts in plain words), its reStructuredText twin, and robustness.md."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pandas as pd

from .comparisons import ALPHA, METHOD, MODELS, PRIMARY, SECONDARY, Comparison
from .estimates import DRAW_MEAN, seeds_of
from .reference import SHOWN_COLUMNS
from .results import main_results, parse_defense
from .tables import TABLES, attacks_markdown, eot_averaged, table_markdown
from .verdicts import SEEDS_CONFIG, VERDICT_WORDS, Claim, doubts, headline


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
    protocols: list[str] = (),
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
    if protocols:  # report/protocols.py: the same attack scored every way
        lines += [
            "",
            "## Scoring protocols",
            "",
            (
                f"- The verdicts above decide on the {PRIMARY} (the resubmission protocol, N = the evaluation's draws) "
                f"and quote the {SECONDARY} (one-shot). The other protocols (tables/protocols.md, protocols.png) "
                "decide no verdict; paired differences on the same images, 95 % image-bootstrap intervals:"
            ),
            *(f"- {line}" for line in protocols),
        ]
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


def reference_markdown(joined: pd.DataFrame) -> str:
    shown = joined.drop(columns=["note"]).astype(object).fillna("")
    shown["run_value"] = [
        f"{v:.2f} [{lo:.2f}, {hi:.2f}]" if v != "" else "missing"
        for v, lo, hi in zip(shown["run_value"], shown["run_ci95_low"], shown["run_ci95_high"])
    ]
    return shown[SHOWN_COLUMNS].to_markdown(index=False)


def robustness_markdown(experiment, dataset, frame, tables, joined, missing, problems) -> str:
    """robustness.md: every table, the attacks and the paper's numbers next to the run's, in one document."""
    main = main_results(frame)
    n = main["n"].max()
    settings = sorted(
        {
            f"{s.name}: {s.kind}" + (f" ({s.purifier}, {s.rt})" if s.purifier or s.rt else "")
            for s in map(parse_defense, main["defense"].unique())
        }
    )
    text = [
        f"# Robustness of the defenses: experiment `{experiment}` ({dataset})",
        "",
        (
            f"Accuracy in % on the same {int(n) if pd.notna(n) else '?'} test images for every defense and attack. "
            "Full-gradient attacks target the whole defended model (random transform + purifier + classifier); "
            "classifier-only (BPDA) numbers are upper bounds and appear only in table (4). Randomized defenses are "
            "scored on independent draws: each cell gives the draw-mean accuracy (one evaluation, the paper's metric) "
            "with its 95 % interval in brackets (Wilson for one attack; a worst case's own bootstrap; with several "
            "training seeds, seeds as the unit), then `all draws`: the worst case over draws, the share of images "
            "right on every draw of one evaluation (what an attacker who may resubmit faces; equal to the draw-mean "
            "for a deterministic defense). `missing` marks what the run has not produced. Differences between defenses "
            "are judged in summary.md by paired tests on the same images, not by these intervals."
        ),
        "",
        "Defenses: " + "; ".join(settings) + ".",
        "",
    ]
    text += [
        "## Attacks: threat model and EOT",
        "",
        (
            "EOT = random-transform samples averaged per gradient step (1: no averaging; deterministic defenses "
            "always get 1). Library attacks without EOT on a randomized defense can understate its weakness."
        ),
        "",
        attacks_markdown(frame),
        "",
    ]
    for name, table in tables.items():
        text += [f"## {TABLES[name]}", "", table_markdown(table), ""]
    text += [
        (
            "Worst cases are the defense's strongest attack: the lowest of its per-attack accuracies over the images "
            "every attack scored (per training seed), the same rule for every defense and both metrics; the "
            "interval is an image bootstrap that re-picks the attack in every resample (with several seeds: seeds "
            "as the unit). `all draws` is right on every draw of one evaluation (N = draws), never pooled over "
            "attacks or result files."
        ),
        "",
    ]
    text += ["## The paper's numbers next to the run's", "", reference_markdown(joined), ""]
    text += ["## Missing", ""] + ([f"- {m}" for m in missing + problems] or ["- Nothing."]) + [""]
    return "\n".join(text)


# What an empty table's page says instead of rows.
EMPTY_TABLES = {"protocols": "the run has no scoring-protocol results (config evaluation.protocols names none)."}


def table_page(name: str, table: pd.DataFrame) -> str:
    """tables/<name>.md: one of the paper's tables under its title (an empty one says why)."""
    if table.empty:
        return f"# {TABLES[name]}\n\nNo rows: {EMPTY_TABLES.get(name, 'the run produced none of its results.')}\n"
    return f"# {TABLES[name]}\n\n{table_markdown(table)}\n"


def reference_page(joined: pd.DataFrame) -> str:
    """tables/reference.md."""
    return "# The paper's numbers next to the run's\n\n" + reference_markdown(joined) + "\n"
