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
schema's ``diagnostics:`` section, and one entry here (with the ``columns`` its per-defense JSON gives the
diagnostics table, diagnostics/summary.py, and those plotted against robust accuracy).

Torch-free: the Snakefile imports it.
"""

from __future__ import annotations

from dataclasses import dataclass

# What every diagnostic takes from the evaluation section: its fixed test images (and draws).
IMAGES = ("n_samples", "sample_seed")


@dataclass(frozen=True)
class Column:
    """A column of the diagnostics table (measures.csv / .md), read from each defense's JSON."""

    name: str
    path: str  # where in the JSON: dotted keys, a number indexes a list ("interval.0")
    label: str | None = None  # plotted against test robust accuracy under this title (measures_vs_robust_accuracy.png)

    def read(self, record: dict):
        """The value at ``path``; None where the record lacks it."""
        value = record
        for key in self.path.split("."):
            if isinstance(value, list) and key.isdigit() and int(key) < len(value):
                value = value[int(key)]
            elif isinstance(value, dict) and key in value:
                value = value[key]
            else:
                return None
        return value


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
    columns: tuple[Column, ...] = ()  # its columns in the diagnostics table, in the table's order


# In the diagnostics table's column order.
PER_DEFENSE = (
    Diagnostic(
        name="robustness_measures",
        command="robustness-measures",
        folder="measures",
        section="measures",
        attacks=True,
        purpose="robust-generalization measures: gap, margin, input-gradient norm, KL, weight flatness",
        columns=(
            Column("randomized", "randomized"),
            Column("attack", "attack"),
            Column("draws", "draws"),
            Column("train_robust_accuracy", "train.robust_accuracy"),
            Column("test_robust_accuracy", "test.robust_accuracy"),
            Column(
                "robust_generalization_gap", "robust_generalization_gap", "robust generalization gap (train - test)"
            ),
            Column("gap_low", "robust_generalization_gap_interval.0"),
            Column("gap_high", "robust_generalization_gap_interval.1"),
            Column("images_per_split", "test.n"),
            Column("margin", "train.margin", "output margin at x_adv (train)"),
            Column("input_gradient_norm", "train.input_gradient_norm", "input-gradient norm at x_adv (train)"),
            Column("kl", "train.kl", "KL(p(x) || p(x_adv)) (train)"),
            Column("flatness_classifier", "flatness.classifier.flatness", "weight flatness, classifier"),
            Column("flatness_purifier", "flatness.purifier.flatness", "weight flatness, purifier"),
        ),
    ),
    Diagnostic(
        name="gradient_concentration",
        command="gradient-concentration",
        folder="gradient_concentration",
        section="gradient_concentration",
        attacks=False,
        purpose="how aligned a randomized defense's input gradients are over draws (GradDiv R), "
        "and the EOT an attack needs",
        columns=(
            Column("mean_resultant_length", "mean_resultant_length", "gradient concentration R"),
            Column("eot_needed", "eot_needed"),
        ),
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
        columns=(Column("boundary_distortion", "distortion"),),
    ),
)
BY_NAME = {diagnostic.name: diagnostic for diagnostic in PER_DEFENSE}
BY_FOLDER = {diagnostic.folder: diagnostic for diagnostic in PER_DEFENSE}
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
