import json
import os
import re
import sys
from pathlib import Path

from atop.config import ConfigError, check_config

try:
    check_config(config)
except ConfigError as error:
    raise WorkflowError(f"invalid config: {error}")

EXPERIMENT = config["experiment"]
DEFENSES = config["evaluation"]["defenses"]
ATTACKS = list(config["evaluation"]["attacks"])
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
        f"{folder}/robustness.md",
        f"{folder}/summary.md",
        f"{folder}/metrics.json",
        *(f"{folder}/{name}.png" for name in REPORT_FIGURES),
    ]
