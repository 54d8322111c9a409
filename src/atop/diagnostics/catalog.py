"""The per-defense diagnostics, as data: one entry each, which the workflow expands.

rules/diagnostics.smk defines one rule per entry (named ``name``) running
``python -m atop <command>`` once per seed and defense it covers, into
``results/<experiment>/diagnostics/seed<N>/<folder>/<defense>.json``; its spec carries the
config's ``diagnostics.<section>``, the evaluation settings named in ``evaluation`` and, for a
diagnostic that ``attacks``, the diagnostics attack (``diagnostics.attack``, whose modules then
count in the job's code version). rules/diagnostics_common.smk lists the outputs as targets,
tools/dvc_pipeline.py puts the rules in DVC's diagnostics stage, and
tests/test_diagnostics.py checks each entry against the CLI, the schema and the DAG.

Adding a diagnostic: its module in this package, its command in src/atop/commands/, its settings in the
schema's ``diagnostics:`` section, and one entry here.

Torch-free: the Snakefile imports it.
"""

from __future__ import annotations

from dataclasses import dataclass

# What every diagnostic takes from the evaluation section: its fixed test images (and draws).
IMAGES = ("n_samples", "sample_seed")


@dataclass(frozen=True)
class Diagnostic:
    name: str  # the Snakemake rule (tests and DVC's diagnostics stage name it)
    command: str  # python -m atop <command>
    folder: str  # results/<experiment>/diagnostics/seed<N>/<folder>/<defense>.json
    section: str  # diagnostics.<section>: the settings handed to the job
    attacks: bool  # whether it runs the diagnostics attack (diagnostics.attack)
    purpose: str  # what it is for (docs/diagnostics.md has the definitions)
    evaluation: tuple[str, ...] = (*IMAGES, "draws")  # the evaluation settings it reads
    purifier_stage: str | None = None  # only defenses whose purifier is this stage's; None: every one
    eps_from: str | None = None  # a null ``eps`` in its section means this config section's eps


PER_DEFENSE = (
    Diagnostic(
        name="gradient_concentration",
        command="gradient-concentration",
        folder="gradient_concentration",
        section="gradient_concentration",
        attacks=False,
        purpose="how aligned a randomized defense's input gradients are over draws (GradDiv R), "
        "and the EOT an attack needs",
    ),
    Diagnostic(
        name="robustness_measures",
        command="robustness-measures",
        folder="measures",
        section="measures",
        attacks=True,
        purpose="robust-generalization measures: gap, margin, input-gradient norm, KL, weight flatness",
    ),
    Diagnostic(
        name="boundary_distortion",
        command="boundary-distortion",
        folder="distortion",
        section="distortion",
        attacks=False,
        purpose="decision-boundary distortion along the FGSM direction (Kim, Lee & Lee, AAAI 2021)",
        evaluation=IMAGES,
        purifier_stage="finetuned",
        eps_from="finetune",
    ),
)
BY_NAME = {diagnostic.name: diagnostic for diagnostic in PER_DEFENSE}
# The rules across defenses (rules/diagnostics.smk): fixed pictures, and the table, figures and
# EOT-sufficiency checks that read the per-defense outputs.
ACROSS_DEFENSES = ("diagnostic_pictures", "diagnostics_summary")
RULES = (*(diagnostic.name for diagnostic in PER_DEFENSE), *ACROSS_DEFENSES)


def settings(diagnostic: Diagnostic, config: dict) -> dict:
    """The diagnostic's config section as its job reads it (a null eps resolved)."""
    section = dict(config["diagnostics"][diagnostic.section])
    if diagnostic.eps_from is not None and section.get("eps") is None:
        section["eps"] = config[diagnostic.eps_from]["eps"]
    return section
