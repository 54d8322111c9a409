"""The reproduction report: the paper's tables and figures next to the paper's numbers.

``write_report`` reads whatever result JSONs and training curves exist, so it runs
on partial results too and lists what is missing. Outputs (in ``out_dir``):

- ``robustness.csv``: every result, one row each; ``robustness.md``: all tables;
- ``tables/{defenses,rt_ablation,purifiers,gradients,reference}.{csv,md}``: the paper's tables
  (1) AT vs AP vs AToP, (2) RT x FT, (3) GAN vs AE, (4) classifier-only vs full gradient,
  and the paper's published numbers joined to the run's;
- ``robust_accuracy``, ``robust_vs_eps``, ``sweeps``, ``training_curves`` as PNG and SVG;
- ``metrics.json`` (headline numbers for DVC) and ``summary.md`` (the paper's claims, judged), with
  ``summary.rst``, the same text that opens Snakemake's HTML report.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pandas as pd

from ..io import atomic_path, read_json, staged_directory, write_json, write_text
from . import figures
from .overfitting import overfitting_lines, stage_flags
from .reference import EQUIVALENCE_MARGIN, join_reference, load_reference, reference_summary
from .results import PER_IMAGE_COLUMNS, find_files, load_results, main_results, missing_results, parse_defense
from .summary import (
    METHOD,
    MODELS,
    claims,
    comparison_metrics,
    doubts,
    gradient_comparisons,
    headline,
    leading_question,
    markdown_to_rst,
    summary_markdown,
)
from .tables import (
    Estimate,
    attacks_markdown,
    defenses_table,
    gradient_table,
    purifier_table,
    rt_ablation_table,
    seeds_of,
    table_csv,
    table_markdown,
)

log = logging.getLogger("atop.report")

TABLES = {
    "defenses": "(1) AT vs AP vs AToP across seen and unseen attacks",
    "rt_ablation": "(2) Random transform x fine-tuning ablation",
    "purifiers": "(3) GAN vs AE purifier, with and without fine-tuning",
    "gradients": "(4) Classifier-only (BPDA, an upper bound) vs full-gradient attacks",
}
FIGURES = ("robust_accuracy", "robust_vs_eps", "sweeps", "training_curves")


def _write_csv(frame: pd.DataFrame, path: Path, index: bool) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=index)


def headline_metrics(frame: pd.DataFrame, table: pd.DataFrame, judged, joined, missing, cross_checks=()) -> dict:
    """Numbers DVC tracks: per-defense accuracies (fractions), both questions' claim verdicts, reference and
    missing counts."""

    def key(column: str) -> str:  # "pgd (seen)" -> "pgd", "worst case (seen)" -> "worst_case_seen"
        if column.startswith("worst case"):
            return column.replace(" (", "_").rstrip(")").replace(" ", "_")
        return column.split(" (")[0]

    top = headline(judged, frame)
    doubted, _ = doubts(frame, cross_checks)
    # draw-mean under the column's key, worst case over draws under key_all_draws (NaN-free: unknown is left out)
    defenses = {
        defense: {
            name: round(float(number), 4)
            for col, v in row.items()
            if isinstance(v, Estimate)
            for name, number in ((key(col), v.value), (f"{key(col)}_all_draws", v.strict))
            if not math.isnan(number)
        }
        for defense, row in table.iterrows()
    }
    # a worst case picks the strongest attack per seed (and per resample), so its interval is its own
    worst_case_ci95 = {
        defense: {
            key(col): {"low": round(float(v.low), 4), "high": round(float(v.high), 4)}
            for col, v in row.items()
            if isinstance(v, Estimate) and col.startswith("worst case")
        }
        for defense, row in table.iterrows()
    }
    return {
        "defenses": defenses,
        "worst_case_ci95": worst_case_ci95,
        "claims": {claim.key: {level: claim.verdicts[level] for level in (METHOD, MODELS)} for claim in judged},
        "headline": comparison_metrics(top, any(d.covers(top) for d in doubted) if top is not None else False),
        "reference": reference_summary(joined),
        "results": len(frame),
        "missing": len(missing),
    }


# Check groups of obfuscation_checks/seed<N>.json (the `checks` job) and diagnostics/seed<N>/eot_checks.json.
CHECK_GROUPS = ("cross_attack", "sweeps", "eot_sufficiency", "checks")


def write_report(
    result_paths,
    out_dir,
    experiment: str,
    dataset: str,
    curve_paths=(),
    reference_paths=(),
    expected=(),
    purifier: str | None = None,
    transform: str | None = None,
    checks_paths=(),
    overfitting: dict | None = None,
    verdicts: dict | None = None,
) -> dict:
    """Write every table, figure, metrics.json and summary.md; return the metrics.

    ``checks_paths`` are the workflow's obfuscation_checks/seed<N>.json (cross-attack and sweep
    checks) and diagnostics/seed<N>/eot_checks.json (EOT sufficiency); their failures are listed in
    the summary and put the numbers they concern in doubt. ``overfitting`` holds the detectors'
    thresholds (config diagnostics.overfitting) for the monitored training curves; ``verdicts`` is
    config verdicts (``decide_on``: the question the headline leads with; ``equivalence_margin``).
    """
    verdicts = {"decide_on": "auto", "equivalence_margin": EQUIVALENCE_MARGIN, **(verdicts or {})}
    margin = float(verdicts["equivalence_margin"])
    if not 0 < margin <= 0.5:
        raise ValueError(f"verdicts.equivalence_margin = {margin} must lie in (0, 0.5] (a fraction of accuracy)")
    out_dir = Path(out_dir)
    reference = load_reference(reference_paths)  # a malformed reference fails before any output is touched
    frame, problems = load_results(result_paths, purifier, transform)
    if frame.empty and not expected:
        raise ValueError(f"no evaluation results found in {', '.join(map(str, result_paths))}")
    missing = missing_results(frame, [Path(p) for p in expected])
    expected_defenses = [Path(p).parent.name for p in expected]

    tables = {
        "defenses": defenses_table(frame, expected_defenses),
        "rt_ablation": rt_ablation_table(frame),
        "purifiers": purifier_table(frame),
        "gradients": gradient_table(frame),
    }
    joined = join_reference(frame, reference, dataset, margin)
    judged = claims(frame, gradient_comparisons(frame), joined, dataset)

    curves = find_files(curve_paths, ".csv")
    overfitting_found = stage_flags(curves, overfitting)
    cross_checks = []
    if isinstance(checks_paths, (str, Path)):
        checks_paths = [checks_paths]
    for path in checks_paths:
        recorded = read_json(path)
        cross_checks += [c for group in CHECK_GROUPS for c in recorded.get(group, [])]
    lead = leading_question(verdicts["decide_on"], len(seeds_of(main_results(frame))))
    metrics = headline_metrics(frame, tables["defenses"], judged, joined, missing, cross_checks)
    metrics["decided_on"] = lead
    metrics["obfuscation_checks_failed"] = sum(c.get("passed") is False for c in cross_checks) + int(
        (frame["failed_checks"] != "").sum()
    )
    # a check that did not run or recorded no outcome is doubt, not a pass
    metrics["obfuscation_checks_without_outcome"] = sum(c.get("passed") is None for c in cross_checks) + int(
        ((frame["unknown_checks"] != "") | ~frame["checks_recorded"].astype(bool)).sum()
    )
    metrics["overfitting_detected"] = sum(
        f["catastrophic"]["detected"] + f["robust"]["detected"] for f in overfitting_found
    )
    # Staged: a kill mid-report leaves the previous complete report or none, never a mix.
    with staged_directory(out_dir) as staging:
        _write_csv(frame.drop(columns=list(PER_IMAGE_COLUMNS)), staging / "robustness.csv", index=False)
        for name, table in tables.items():
            _write_csv(table_csv(table), staging / "tables" / f"{name}.csv", index=True)
            write_text(staging / "tables" / f"{name}.md", f"# {TABLES[name]}\n\n{table_markdown(table)}\n")
        _write_csv(joined, staging / "tables" / "reference.csv", index=False)
        write_text(
            staging / "tables" / "reference.md",
            "# The paper's numbers next to the run's\n\n" + _reference_markdown(joined) + "\n",
        )
        write_text(staging / "robustness.md", _document(experiment, dataset, frame, tables, joined, missing, problems))

        figures.robust_accuracy_figure(frame, staging / "robust_accuracy")
        figures.eps_curves_figure(frame, staging / "robust_vs_eps")
        figures.sweeps_figure(frame, staging / "sweeps")
        figures.training_curves_figure(curves, staging / "training_curves", overfitting)

        summary = summary_markdown(
            experiment,
            dataset,
            frame,
            judged,
            missing,
            problems,
            cross_checks,
            overfitting_lines(overfitting_found, overfitting),
            lead,
        )
        write_text(staging / "summary.md", summary)
        # the first page of Snakemake's HTML report: the verdicts, then the headline figure
        write_text(staging / "summary.rst", markdown_to_rst(summary, staging / "robust_accuracy.png"))
        write_json(staging / "metrics.json", metrics)
    return metrics


def _reference_markdown(joined: pd.DataFrame) -> str:
    shown = joined.drop(columns=["note"]).astype(object).fillna("")
    shown["run_value"] = [
        f"{v:.2f} [{lo:.2f}, {hi:.2f}]" if v != "" else "missing"
        for v, lo, hi in zip(shown["run_value"], shown["run_ci95_low"], shown["run_ci95_high"])
    ]
    columns = [
        "paper_setting",
        "paper_dataset",
        "paper_defense",
        "paper_purifier",
        "paper_rt",
        "paper_attack",
        "gradient",
        "metric",
        "paper_value",
        "run_defense",
        "run_attack",
        "run_eps",
        "run_value",
        "status",
        "difference",
        "equivalence",
    ]
    return shown[columns].to_markdown(index=False)


def _document(experiment, dataset, frame, tables, joined, missing, problems) -> str:
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
    text += ["## The paper's numbers next to the run's", "", _reference_markdown(joined), ""]
    text += ["## Missing", ""] + ([f"- {m}" for m in missing + problems] or ["- Nothing."]) + [""]
    return "\n".join(text)
