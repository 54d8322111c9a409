import json
import os
import re
import shutil
import sys
from pathlib import Path

from atop.config import ConfigError, check_config, number

try:
    check_config(config)
except ConfigError as error:
    raise WorkflowError(f"invalid config: {error}")

EXPERIMENT = config["experiment"]
DEFENSES = config["evaluation"]["defenses"]
ATTACKS = list(config["evaluation"]["attacks"])
SWEEPS = config["evaluation"]["sweeps"]
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

# Which purifier checkpoint each defense puts in front of the classifier.
PURIFIER_OF_DEFENSE = {
    "standard": None,
    "ap": "purifier_pretrained",
    "atop": "purifier_finetuned",
}


def _alternatives(names):
    return "|".join(re.escape(name) for name in names)


wildcard_constraints:
    experiment=re.escape(EXPERIMENT),
    defense=_alternatives(DEFENSES),
    attack=_alternatives(ATTACKS),
    sweep=_alternatives(SWEEPS) or "(?!)",
    point=r"\d+",


def spec(*sections, **extra):
    """The config slice a stage needs, as one JSON string (a param, so edits rerun the stage)."""
    payload = {
        "experiment": EXPERIMENT,
        "seed": config["seed"],
        "device": config["device"],
    }
    payload |= {section: config[section] for section in sections}
    payload |= extra
    return json.dumps(payload, sort_keys=True)


def evaluation_inputs(wildcards):
    inputs = {
        "data": f"results/{wildcards.experiment}/data/dataset.pt",
        "classifier": f"models/{wildcards.experiment}/classifier.pt",
    }
    purifier = PURIFIER_OF_DEFENSE[wildcards.defense]
    if purifier is not None:
        inputs["purifier"] = f"models/{wildcards.experiment}/{purifier}.pt"
    return inputs


# What every evaluation job shares; each job adds only its own attack, so editing
# one attack (or a sweep) reruns that attack's jobs and no others.
SCORING = {
    key: value
    for key, value in config["evaluation"].items()
    if key not in ("attacks", "sweeps", "defenses")
}


def evaluation_spec(attack):
    return spec(
        evaluation=SCORING,
        attack=config["evaluation"]["attacks"][attack],
        finetune_attack=config["finetune"]["attack"],
    )


def sweep_spec(sweep, point):
    """One point of a sweep: the base attack with one parameter replaced."""
    sweep_config = SWEEPS[sweep]
    value = sweep_config["values"][int(point)]
    evaluation = {
        **SCORING,
        "n_samples": sweep_config.get("n_samples", SCORING["n_samples"]),
    }
    base = config["evaluation"]["attacks"][sweep_config["attack"]]
    return spec(
        attack={**base, sweep_config["param"]: value},
        evaluation=evaluation,
        finetune_attack=config["finetune"]["attack"],
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


def sweep_results(experiment):
    return [
        f"results/{experiment}/sweeps/{name}/{defense}/{point}.json"
        for name, sweep in SWEEPS.items()
        for defense in sweep.get("defenses", DEFENSES)
        for point in range(len(sweep["values"]))
    ]


def evaluation_results(experiment):
    return expand(
        "results/{experiment}/eval/{defense}/{attack}.json",
        experiment=experiment,
        defense=DEFENSES,
        attack=ATTACKS,
    )


def training_curves(experiment):
    return expand(
        "results/{experiment}/curves/{stage}.csv",
        experiment=experiment,
        stage=["classifier", "purifier_pretrain", "purifier_finetune"],
    )


# The paper's published numbers the report sets the run's next to.
REFERENCE_NUMBERS = "config/reference/paper.csv"
REPORT_TABLES = ["defenses", "rt_ablation", "purifiers", "gradients", "reference"]
REPORT_FIGURES = ["robust_accuracy", "robust_vs_eps", "sweeps", "training_curves"]


def all_targets():
    folder = f"results/{EXPERIMENT}/report"
    return [
        f"results/{EXPERIMENT}/obfuscation_checks.json",
        f"{folder}/robustness.md",
        f"{folder}/summary.md",
        f"{folder}/metrics.json",
        *(f"{folder}/{name}.png" for name in REPORT_FIGURES),
    ]
