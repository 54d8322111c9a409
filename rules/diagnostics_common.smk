# The diagnostics rules' settings and input functions (rules/diagnostics.smk).
from types import SimpleNamespace

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


def diagnostics_spec(part, seed, attack=True):
    """One diagnostic's settings, the evaluation's subset and draws, and (if it attacks) the attack."""
    evaluation = {
        k: config["evaluation"][k] for k in ("n_samples", "sample_seed", "draws")
    }
    extra = {}
    if attack:
        extra = {
            "attack": attack_params(DIAGNOSTICS_ATTACK),
            "attack_name": DIAGNOSTICS_ATTACK,
        }
    return spec(
        seed=seed,
        diagnostics={part: config["diagnostics"][part]},
        evaluation=evaluation,
        **extra,
    )


# Decision-boundary distortion (Kim, Lee & Lee 2021) is measured on every fine-tuned defense.
FINETUNED_DEFENSES = [
    d
    for d in DEFENSES
    if DEFENSE_KINDS[split_defense(d)[0]].purifier_stage == "finetuned"
]


def distortion_spec(seed):
    """The distortion settings, eps null resolved to the fine-tuning attack's eps."""
    settings = dict(config["diagnostics"]["distortion"])
    if settings.get("eps") is None:
        settings["eps"] = config["finetune"]["eps"]
    evaluation = {k: config["evaluation"][k] for k in ("n_samples", "sample_seed")}
    return spec(seed=seed, diagnostics={"distortion": settings}, evaluation=evaluation)


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


def picture_defenses(wildcards):
    """--defense NAME CLASSIFIER [PURIFIER] for every evaluated defense."""
    args = []
    for defense in DEFENSES:
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
            for defense in DEFENSES
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
    targets = []
    for seed in seeds:
        folder = DIAGNOSTICS.format(experiment=experiment, seed=seed)
        targets += [
            f"{folder}/pictures.png",
            *(f"{folder}/{name}" for name in DIAGNOSTICS_SUMMARY),
            *(f"{folder}/distortion/{defense}.json" for defense in FINETUNED_DEFENSES),
        ]
    return targets


def eot_checks(experiment, seeds=FULL_SEEDS):
    """The EOT-sufficiency checks of every seed (the report reads them)."""
    return [
        f"{DIAGNOSTICS.format(experiment=experiment, seed=seed)}/eot_checks.json"
        for seed in seeds
    ]
