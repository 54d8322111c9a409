"""The reproduction report: the paper's tables and figures next to the paper's numbers.

``write_report`` reads whatever result JSONs and training curves exist, so it runs
on partial results too and lists what is missing. Outputs (in ``out_dir``):

- ``robustness.csv``: every result, one row each; ``robustness.md``: all tables;
- ``tables/{defenses,rt_ablation,purifiers,gradients,reference}.{csv,md}``: the paper's tables
  (1) AT vs AP vs AToP, (2) RT x FT, (3) GAN vs AE, (4) classifier-only vs full gradient,
  and the paper's published numbers joined to the run's; ``tables/resubmission.{csv,md}``: the
  randomized defenses' robust accuracy when each adversarial image is resubmitted N times;
- ``robust_accuracy``, ``robust_vs_eps``, ``sweeps``, ``training_curves`` as PNG and SVG;
- ``metrics.json`` (headline numbers for DVC) and ``summary.md`` (the paper's claims, judged), with
  ``summary.rst``, the same text that opens Snakemake's HTML report.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from ..claims import user_claims
from ..io import atomic_path, read_json, staged_directory, write_json, write_text
from . import figures
from .comparisons import gradient_comparisons
from .estimates import seeds_of
from .metrics_json import headline_metrics
from .overfitting import overfitting_lines, stage_flags
from .protocols import protocol_outcomes, protocol_table, ranking_lines
from .reference import EQUIVALENCE_MARGIN, join_reference, load_reference
from .render import markdown_to_rst, reference_page, robustness_markdown, summary_markdown, table_page
from .results import PER_IMAGE_COLUMNS, find_files, load_results, main_results, missing_results
from .tables import (
    TABLES,
    defenses_table,
    gradient_table,
    purifier_table,
    resubmission_table,
    rt_ablation_table,
    table_csv,
)
from .verdicts import claims, leading_question

log = logging.getLogger("atop.report")

# The tables (tables/<name>.csv and .md) and figures (<name>.png and .svg) write_report writes:
# rules/common.smk's REPORT_TABLES and REPORT_FIGURES name them too (tests/test_report.py keeps them equal).
TABLE_FILES = (*TABLES, "reference")
FIGURES = ("robust_accuracy", "robust_vs_eps", "sweeps", "training_curves", "protocols")


def _write_csv(frame: pd.DataFrame, path: Path, index: bool) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=index)


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
    protocol_paths=(),
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

    protocol_jobs = [read_json(path) for path in find_files(protocol_paths, ".json")]
    # only the evaluations the protocol jobs sit beside (eval/seed<N>/<defense>/<attack>.json) are read again
    wanted = {(job["defense"], f"{job['attack']}.json") for job in protocol_jobs}
    beside = [p for p in find_files(result_paths, ".json") if (p.parent.name, p.name) in wanted]
    scored = protocol_outcomes([read_json(path) for path in beside], protocol_jobs) if protocol_jobs else []
    tables = {
        "defenses": defenses_table(frame, expected_defenses),
        "rt_ablation": rt_ablation_table(frame),
        "purifiers": purifier_table(frame),
        "gradients": gradient_table(frame),
        "resubmission": resubmission_table(frame),
        "protocols": protocol_table(scored),
    }
    joined = join_reference(frame, reference, dataset, margin)
    judged = claims(frame, gradient_comparisons(frame), joined, dataset, user_claims(verdicts.get("claims", ())))

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
            write_text(staging / "tables" / f"{name}.md", table_page(name, table))
        _write_csv(joined, staging / "tables" / "reference.csv", index=False)
        write_text(staging / "tables" / "reference.md", reference_page(joined))
        write_text(
            staging / "robustness.md",
            robustness_markdown(experiment, dataset, frame, tables, joined, missing, problems),
        )

        figures.robust_accuracy_figure(frame, staging / "robust_accuracy")
        figures.eps_curves_figure(frame, staging / "robust_vs_eps")
        figures.sweeps_figure(frame, staging / "sweeps")
        figures.training_curves_figure(curves, staging / "training_curves", overfitting)
        figures.protocols_figure(scored, staging / "protocols")

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
            ranking_lines(scored),
        )
        write_text(staging / "summary.md", summary)
        # the first page of Snakemake's HTML report: the verdicts, then the headline figure
        write_text(staging / "summary.rst", markdown_to_rst(summary, staging / "robust_accuracy.png"))
        write_json(staging / "metrics.json", metrics)
    return metrics
