import json
import os
import re
import shlex
import shutil
import sys
from pathlib import Path

# The DAG is built with this checkout's atop (not whichever one the environment installed).
sys.path.insert(0, f"{workflow.basedir}/src")

from atop.config import (
    ConfigError,
    attack_defenses,
    check_config,
    check_device,
    full_seeds,
    number,
    protocol_defenses,
    purifier_variant,
    seed_plan,
)
from atop.protocols import JOB_PROTOCOLS
from atop import custom_defenses
from atop.defense_kinds import DEFENSES as DEFENSE_KINDS, split_defense
from atop.code_closure import command_code_version
from atop.previous_outputs import PreviousOutputs

try:
    check_config(config)
    # Jobs run on this machine: a device it lacks fails them all (a cluster's nodes have their own).
    if workflow.local_exec:
        check_device(config)
except ConfigError as error:
    raise WorkflowError(f"invalid config: {error}")

# Finished outputs survive a failed job: kept before any job runs, given back to the jobs that
# failed (Snakemake removes a job's outputs before running it; src/atop/previous_outputs.py).
PREVIOUS_OUTPUTS = PreviousOutputs(workflow)


onstart:
    PREVIOUS_OUTPUTS.keep()


onsuccess:
    PREVIOUS_OUTPUTS.discard()


onerror:
    failures = PREVIOUS_OUTPUTS.failures()
    if failures:
        print(
            "Failed jobs, by their logs:", *failures, sep="\n    ", file=sys.stderr
        )
    restored = PREVIOUS_OUTPUTS.restore()
    if restored:
        print(
            f"The failed jobs' previous outputs are back in place ({len(restored)} files, as before this run):",
            *restored,
            sep="\n    ",
            file=sys.stderr,
        )


EXPERIMENT = config["experiment"]
# Training-seed replicates: each seed trains and evaluates its own models on the same images;
# with config `replicates`, the seeds after the first train and evaluate only what it names
# (seed_defenses / seed_attacks) and sweeps, checks and diagnostics run on FULL_SEEDS only.
SEEDS = config["seeds"]
FULL_SEEDS = full_seeds(config)
DEFENSES = config["evaluation"]["defenses"]
ATTACKS = list(config["evaluation"]["attacks"])
SWEEPS = config["evaluation"]["sweeps"]
# Scoring protocols side by side (src/atop/protocols.py): empty without evaluation.protocols.
PROTOCOL_SETTINGS = config["evaluation"].get("protocols") or {}
PURIFIERS = config["purifiers"]
# Jobs run `python -m atop` from this checkout's src/ (so --use-conda envs need only
# the dependencies), with the environment running Snakemake first on PATH (so
# `.venv/bin/snakemake` works without activating the environment).
os.environ.update(
    PATH=os.pathsep.join([str(Path(sys.executable).parent), os.getenv("PATH", "")]),
    PYTHONPATH=os.pathsep.join(
        [f"{workflow.basedir}/src", os.getenv("PYTHONPATH", "")]
    ),
)
ENV = "../environment.yml"


def _runs_on_gpu():
    """Whether jobs will take a GPU here: the config asks for one, or auto finds one."""
    device = config["device"]
    if device == "auto":
        return shutil.which("nvidia-smi") is not None
    return device.startswith("cuda")


# Each model job holds one GPU while it runs, so the default profile's gpu=1 limit
# keeps two of them off one GPU. On a CPU-only machine they hold none and run side
# by side. Cluster profiles set gpu per rule themselves (set-resources).
GPU = 1 if _runs_on_gpu() else 0

# Threads per job (config threads.*; --set-threads still overrides a rule).
TRAIN_THREADS = config["threads"]["training"]
EVAL_THREADS = config["threads"]["evaluation"]

# The checkpoint each classifier role and purifier stage is read from. One folder per
# stage, the seed below it: DVC tracks each stage's per-seed, per-variant outputs as one
# directory, whatever the config's seeds and variants.
CLASSIFIER_CHECKPOINT = {
    "standard": "models/{experiment}/classifier/seed{seed}.pt",
    "adversarial": "models/{experiment}/classifier_adversarial/seed{seed}.pt",
}
PURIFIER_CHECKPOINT = "models/{experiment}/purifier_{stage}/seed{seed}/{variant}.pt"
# A custom defense's check (python -m atop check-defense): its evaluations and diagnostics wait for it.
DEFENSE_CHECK = "results/{experiment}/defense_checks/seed{seed}/{defense}.json"


def _alternatives(names):
    return "|".join(re.escape(name) for name in names)


wildcard_constraints:
    experiment=re.escape(EXPERIMENT),
    seed=_alternatives(str(seed) for seed in SEEDS),
    defense=_alternatives(DEFENSES),
    attack=_alternatives(ATTACKS),
    sweep=_alternatives(SWEEPS) or "(?!)",
    variant=_alternatives(PURIFIERS) or "(?!)",
    point=r"\d+",
    protocol=_alternatives(JOB_PROTOCOLS),


def code_version(command, attacks=None):
    """The hash of the source a `python -m atop <command>` job runs (a param: an edit reruns its jobs).

    ``attacks``: the config attacks the job builds by name (evaluations, the diagnostics'
    attack), so it hashes their modules only (src/atop/code_closure.py).
    """
    methods = None
    if attacks is not None:
        methods = tuple(
            sorted({config["evaluation"]["attacks"][a]["method"] for a in attacks})
        )
    return command_code_version(Path(workflow.basedir), command, methods)


# Spec keys that are not config sections, by the section they are drawn from: DVC
# tracks a stage's params by section (tools/dvc_pipeline.py reads this).
SPEC_SOURCES = {
    "seed": "seeds",
    "purifier": "purifiers",
    "variant": "purifiers",
    "attack": "evaluation",
    "finetune_attack": "finetune",
}


def spec(*sections, seed=None, **extra):
    """The config slice a stage needs, as one JSON string (a param, so edits rerun the stage).

    ``seed`` is the job's training seed (its wildcard); the data, shared by every seed, has none.
    """
    payload = {"experiment": EXPERIMENT, "device": config["device"]}
    if seed is not None:
        payload["seed"] = int(seed)
    payload |= {section: config[section] for section in sections}
    payload |= extra
    return json.dumps(payload, sort_keys=True)


def classifier_role(defense):
    """Which classifier a defense is built on: its kind's, or (custom) its config entry's; None: none."""
    kind = DEFENSE_KINDS[split_defense(defense)[0]]
    if kind.variants_from == custom_defenses.SECTION:
        return custom_defenses.entry(config, defense)["classifier"]
    return kind.classifier


def is_custom(defense):
    return (
        DEFENSE_KINDS[split_defense(defense)[0]].variants_from
        == custom_defenses.SECTION
    )


def defense_inputs(wildcards, checked=True):
    """The data and the files the defense is built from (defense_kinds.py); a custom defense's jobs
    also wait for its defense check (``checked``), so a broken factory fails before any attack runs.
    """
    kind = DEFENSE_KINDS[split_defense(wildcards.defense)[0]]
    experiment, seed = wildcards.experiment, wildcards.seed
    inputs = {"data": f"results/{experiment}/data/dataset.pt"}
    role = classifier_role(wildcards.defense)
    if role is not None:
        inputs["classifier"] = CLASSIFIER_CHECKPOINT[role].format(
            experiment=experiment, seed=seed
        )
    if kind.purifier_stage is not None:
        inputs["purifier"] = PURIFIER_CHECKPOINT.format(
            experiment=experiment,
            seed=seed,
            variant=purifier_variant(config, wildcards.defense),
            stage=kind.purifier_stage,
        )
    if is_custom(wildcards.defense):
        inputs |= custom_defenses.files(config, wildcards.defense, Path.cwd())
        if checked:
            inputs["defense_check"] = DEFENSE_CHECK.format(
                experiment=experiment, seed=seed, defense=wildcards.defense
            )
    return inputs


def evaluation_inputs(wildcards):
    """What an evaluation or a diagnostic of one defense reads (defense_inputs, checked)."""
    return defense_inputs(wildcards)


def defense_args(wildcards, input):
    """``--classifier PATH``, ``--purifier PATH`` and (custom) ``--custom-defense JSON`` of a job's defense."""
    args = [
        f"--{role} {input[role]}"
        for role in ("classifier", "purifier")
        if role in input.keys()
    ]
    if is_custom(wildcards.defense):
        entry = json.dumps(
            custom_defenses.entry(config, wildcards.defense), sort_keys=True
        )
        args.append(f"--custom-defense {shlex.quote(entry)}")
    return " ".join(args)


def performance(stage):
    """Only the stage's own speed settings, so changing evaluation's reruns no training."""
    return {stage: config["performance"][stage]}


def purifier_spec(variant, seed):
    """One variant's section, as the pre-training stage reads it (other variants stay out)."""
    return spec(
        seed=seed,
        purifier=PURIFIERS[variant],
        variant=variant,
        performance=performance("training"),
    )


def adversarial_training_spec(seed):
    """The classifier recipe and the AT budget; a provided standard checkpoint does not matter here."""
    classifier = {k: v for k, v in config["classifier"].items() if k != "pretrained"}
    return spec(
        "adversarial_training",
        seed=seed,
        classifier=classifier,
        performance=performance("training"),
    )


# What every evaluation job reads from the evaluation section: the lists of
# defenses, attacks and sweeps stay out, so adding one reruns nothing else.
EVALUATION_SETTINGS = (
    "n_samples",
    "sample_seed",
    "draws",
    "eot",
    "batch_size",
    "checks",
)


def evaluation_settings(**overrides):
    settings = {k: config["evaluation"][k] for k in EVALUATION_SETTINGS}
    return settings | overrides


def attack_params(attack):
    """An attack's parameters, without the selection of defenses it runs on."""
    return {
        k: v
        for k, v in config["evaluation"]["attacks"][attack].items()
        if k != "defenses"
    }


def evaluation_spec(attack, seed):
    return spec(
        seed=seed,
        attack=attack_params(attack),
        evaluation=evaluation_settings(n_samples=seed_images(seed)),
        finetune_attack=config["finetune"]["attack"],
        performance=performance("evaluation"),
    )


def sweep_spec(sweep, point, seed):
    """One point of a sweep: the base attack with one parameter replaced."""
    sweep_config = SWEEPS[sweep]
    value = sweep_config["values"][int(point)]
    n_samples = sweep_config.get("n_samples", config["evaluation"]["n_samples"])
    attack = {**attack_params(sweep_config["attack"]), sweep_config["param"]: value}
    if sweep_config.get(
        "scale_alpha"
    ):  # the step keeps its ratio to eps (config checks: an eps sweep)
        base = attack_params(sweep_config["attack"])
        attack["alpha"] = number(value) * number(base["alpha"]) / number(base["eps"])
    return spec(
        seed=seed,
        attack=attack,
        evaluation=evaluation_settings(n_samples=n_samples),
        finetune_attack=config["finetune"]["attack"],
        performance=performance("evaluation"),
        sweep={
            "name": sweep,
            "param": sweep_config["param"],
            "value": number(value),
            "index": int(point),
            "base_attack": sweep_config["attack"],
        },
    )


def sweep_attack_name(wildcards):
    sweep_config = SWEEPS[wildcards.sweep]
    value = sweep_config["values"][int(wildcards.point)]
    return f"{sweep_config['attack']}@{sweep_config['param']}={value}"


def seed_defenses(seed):
    """The evaluated defenses the training seed trains and evaluates."""
    return seed_plan(config, seed)[0]


def seed_attacks(seed):
    return seed_plan(config, seed)[1]


def seed_images(seed):
    """Test images the seed's evaluations score: the first of the same seeded subset for replicates."""
    replicates = config["replicates"]
    if replicates is None or int(seed) in FULL_SEEDS:
        return config["evaluation"]["n_samples"]
    return replicates.get("n_samples", config["evaluation"]["n_samples"])


def sweep_results(experiment, seeds=FULL_SEEDS):
    return [
        f"results/{experiment}/sweeps/seed{seed}/{name}/{defense}/{point}.json"
        for seed in seeds
        for name, sweep in SWEEPS.items()
        for defense in sweep.get("defenses", DEFENSES)
        for point in range(len(sweep["values"]))
    ]


def evaluation_results(experiment, seeds=SEEDS):
    """One result per (seed, defense, attack), for the defenses each attack selects."""
    return [
        f"results/{experiment}/eval/seed{seed}/{defense}/{attack}.json"
        for seed in seeds
        for attack in seed_attacks(seed)
        for defense in attack_defenses(config, attack)
        if defense in seed_defenses(seed)
    ]


def finetuned_variants(seed):
    """The variants the seed's atop defenses fine-tune (stage_finetuning's targets)."""
    defenses = seed_defenses(seed)
    return sorted(
        {
            purifier_variant(config, d)
            for d in defenses
            if DEFENSE_KINDS[split_defense(d)[0]].purifier_stage == "finetuned"
        }
    )


def pretrained_variants(seed):
    """Only the variants some of the seed's defenses put in front of the classifier are built."""
    return sorted({purifier_variant(config, d) for d in seed_defenses(seed)} - {None})


def needs_adversarial(seed):
    return any(classifier_role(d) == "adversarial" for d in seed_defenses(seed))


def training_curves(experiment, seeds=SEEDS):
    """The curve of every training job the evaluated defenses need, seed by seed."""
    curves = []
    for seed in seeds:
        curves.append(f"classifier/seed{seed}")
        for defense in seed_defenses(seed):
            kind = DEFENSE_KINDS[split_defense(defense)[0]]
            variant = purifier_variant(config, defense)
            if classifier_role(defense) == "adversarial":
                curves.append(f"classifier_adversarial/seed{seed}")
            if kind.purifier_stage is not None:
                curves.append(f"purifier_pretrain/seed{seed}/{variant}")
            if kind.purifier_stage == "finetuned":
                curves.append(f"purifier_finetune/seed{seed}/{variant}")
    return [f"results/{experiment}/curves/{c}.csv" for c in dict.fromkeys(curves)]


def protocol_spec(protocol, seed):
    """A scoring protocol's job (protocols.py): the protocols' attack on its first n_samples images."""
    settings = PROTOCOL_SETTINGS
    entry = {"name": protocol}
    attack = attack_params(settings["attack"])
    if protocol == "majority_vote":
        entry["copies"] = settings.get("majority_vote", {}).get("copies", 4)
        # the vote's gradient already averages its K copies: EOT over the K-copy ensemble
        if "eot" in attack:
            attack = {**attack, "eot": 1}
    if protocol == "selective_eot":
        attack = {**attack, "eot_weighting": "selective"}
    return spec(
        seed=seed,
        attack=attack,
        # the first of the evaluation's images (at most all of them: an evaluation.n_samples override wins)
        evaluation=evaluation_settings(
            n_samples=min(
                settings.get("n_samples", config["evaluation"]["n_samples"]),
                config["evaluation"]["n_samples"],
            )
        ),
        finetune_attack=config["finetune"]["attack"],
        performance=performance("evaluation"),
        protocol=entry,
    )


def protocol_results(experiment, seeds=FULL_SEEDS):
    """The protocols' own jobs: each job protocol on each compared defense (none without the section)."""
    return [
        f"results/{experiment}/protocols/seed{seed}/{defense}/{protocol}.json"
        for seed in seeds
        for defense in protocol_defenses(config)
        for protocol in PROTOCOL_SETTINGS.get("jobs", JOB_PROTOCOLS)
    ]


def obfuscation_checks(experiment, seeds=FULL_SEEDS):
    """The cross-attack and sweep checks, one file per seed (rules/evaluate.smk)."""
    return [
        f"results/{experiment}/obfuscation_checks/seed{seed}.json" for seed in seeds
    ]


def report_purifier_args():
    """The purifier and RT behind bare ap / atop names (one variant), for the report."""
    if len(PURIFIERS) != 1:
        return ""
    (purifier,) = PURIFIERS.values()
    return f"--purifier {purifier['arch']} --transform {purifier['transform']}"


# The paper's published numbers the report sets the run's next to.
REFERENCE_NUMBERS = "config/reference/paper.csv"
# What the report writes (atop.report TABLE_FILES and FIGURES; tests/test_report.py keeps them equal).
REPORT_TABLES = [
    "defenses",
    "rt_ablation",
    "purifiers",
    "gradients",
    "resubmission",
    "protocols",
    "reference",
]
REPORT_FIGURES = [
    "robust_accuracy",
    "robust_vs_eps",
    "sweeps",
    "training_curves",
    "protocols",
]


# The diagnostics' settings, targets and input functions: all_targets below and report.smk read
# them, rules/diagnostics.smk makes their rules.
include: "diagnostics_common.smk"


def all_targets():
    folder = f"results/{EXPERIMENT}/report"
    return [
        *obfuscation_checks(EXPERIMENT),
        f"{folder}/robustness.md",
        f"{folder}/summary.md",
        f"{folder}/metrics.json",
        *(f"{folder}/{name}.png" for name in REPORT_FIGURES),
        *diagnostics_targets(EXPERIMENT),
    ]
