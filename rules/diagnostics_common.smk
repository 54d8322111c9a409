# The diagnostics' settings, targets and input functions: rules/diagnostics.smk makes their
# rules, common.smk's all_targets and report.smk read their outputs (common.smk includes this).
from types import SimpleNamespace

from atop.diagnostics import catalog as diagnostics_catalog
from atop.diagnostics.settings import PARTIAL_GRADIENT_METHODS, check_diagnostics

try:
    check_diagnostics(config)
except ConfigError as error:
    raise WorkflowError(f"invalid config: {error}")

DIAGNOSTICS = "results/{experiment}/diagnostics/seed{seed}"
DIAGNOSTICS_ATTACK = config["diagnostics"]["attack"]
DIAGNOSTICS_SUMMARY = [
    "measures.csv",
    "measures.md",
    "measures_vs_robust_accuracy.png",
    "eot_sufficiency.png",
    "eot_checks.json",
]


def diagnostics_spec(
    section,
    seed,
    attack=True,
    evaluation=("n_samples", "sample_seed", "draws"),
    settings=None,
):
    """One diagnostic's settings (default: its config section), the evaluation's settings it reads
    (its fixed images, draws), and (if it attacks) the diagnostics attack."""
    if settings is None:
        settings = config["diagnostics"][section]
    extra = {}
    if attack:
        extra = {
            "attack": attack_params(DIAGNOSTICS_ATTACK),
            "attack_name": DIAGNOSTICS_ATTACK,
        }
    return spec(
        seed=seed,
        diagnostics={section: settings},
        evaluation={k: config["evaluation"][k] for k in evaluation},
        **extra,
    )


def diagnostic_spec(diagnostic):
    """The ``spec`` param of a per-defense diagnostic's jobs."""
    return lambda wildcards: diagnostics_spec(
        diagnostic.section,
        wildcards.seed,
        attack=diagnostic.attacks,
        evaluation=diagnostic.evaluation,
        settings=diagnostics_catalog.settings(diagnostic, config),
    )


def diagnostic_defenses(diagnostic):
    """The evaluated defenses a per-defense diagnostic runs on (decision-boundary distortion:
    the fine-tuned ones)."""
    if diagnostic.purifier_stage is None:
        return DEFENSES
    return [
        d
        for d in DEFENSES
        if DEFENSE_KINDS[split_defense(d)[0]].purifier_stage
        == diagnostic.purifier_stage
    ]


def diagnostic_output(diagnostic):
    """The output pattern of a per-defense diagnostic: one JSON per seed and defense."""
    return f"{DIAGNOSTICS}/{diagnostic.folder}/{{defense}}.json"


def diagnostic_files(name):
    """A per-defense diagnostic's outputs for every defense it covers ({experiment}, {seed} left)."""
    diagnostic = diagnostics_catalog.BY_NAME[name]
    return expand(
        diagnostic_output(diagnostic),
        defense=diagnostic_defenses(diagnostic),
        allow_missing=True,
    )


def eot_results(experiment, seed):
    """The results the EOT-sufficiency checks judge (full-gradient EOT attacks on randomized defenses)
    and the EOT sweep points they are judged by."""
    attacks = config["evaluation"]["attacks"]
    judged = [
        name
        for name in ATTACKS
        if "eot" in attacks[name]
        and attacks[name]["method"] not in PARTIAL_GRADIENT_METHODS
    ]
    evaluations = [
        f"results/{experiment}/eval/seed{seed}/{defense}/{attack}.json"
        for attack in judged
        for defense in attack_defenses(config, attack)
        if DEFENSE_KINDS[split_defense(defense)[0]].purifier_stage is not None
    ]
    # the EOT sweeps of those attacks: the check decides on whether a larger EOT lowers accuracy
    sweeps = [
        f"results/{experiment}/sweeps/seed{seed}/{name}/{defense}/{point}.json"
        for name, sweep in SWEEPS.items()
        if sweep["param"] == "eot" and sweep["attack"] in judged
        for defense in sweep.get("defenses", DEFENSES)
        for point in range(len(sweep["values"]))
    ]
    return evaluations + sweeps


def pictured_defenses():
    """The defenses the pictures show: a custom defense has no purified image to show."""
    return [d for d in DEFENSES if not is_custom(d)]


def picture_defenses(wildcards):
    """--defense NAME CLASSIFIER [PURIFIER] for every pictured defense."""
    args = []
    for defense in pictured_defenses():
        inputs = evaluation_inputs(
            SimpleNamespace(
                defense=defense, experiment=wildcards.experiment, seed=wildcards.seed
            )
        )
        paths = [inputs["classifier"], inputs.get("purifier", "")]
        args.append(f"--defense {defense} {' '.join(paths).strip()}")
    return " ".join(args)


def picture_inputs(wildcards):
    return sorted(
        {
            path
            for defense in pictured_defenses()
            for path in evaluation_inputs(
                SimpleNamespace(
                    defense=defense,
                    experiment=wildcards.experiment,
                    seed=wildcards.seed,
                )
            ).values()
        }
    )


def diagnostics_targets(experiment, seeds=FULL_SEEDS):
    """Every diagnostics output of the seeds: pictures, summary, each per-defense diagnostic's."""
    targets = []
    for seed in seeds:
        folder = DIAGNOSTICS.format(experiment=experiment, seed=seed)
        targets += [
            f"{folder}/pictures.png",
            *(f"{folder}/{name}" for name in DIAGNOSTICS_SUMMARY),
            *(
                f"{folder}/{diagnostic.folder}/{defense}.json"
                for diagnostic in diagnostics_catalog.PER_DEFENSE
                for defense in diagnostic_defenses(diagnostic)
            ),
        ]
    return targets


def eot_checks(experiment, seeds=FULL_SEEDS):
    """The EOT-sufficiency checks of every seed (the report reads them)."""
    return [
        f"{DIAGNOSTICS.format(experiment=experiment, seed=seed)}/eot_checks.json"
        for seed in seeds
    ]
