# AToP - Adversarial Training on Purification, as one reproducible DAG:
# data -> classifier and purifier pre-training -> AToP fine-tuning
#      -> one evaluation job per (defense, attack) -> report.
import sys

from snakemake.utils import min_version, validate

min_version("9.0")

sys.path.insert(0, f"{workflow.basedir}/src")

from atop.config import (
    ConfigError,
    check_schema,
    config_source,
    load_config_file,
    merge,
    typed_overrides,
)

# The embedded default, unless --configfile names another experiment (a preset is
# complete on its own: merging it into the default would mix two experiments).
# A YAML syntax error in it is named with its file and line (Snakemake's message names neither;
# for a --configfile, `python -m atop.config <file>` does).
if not workflow.config_settings.configfiles:
    try:
        load_config_file("config/config.yaml")
    except ConfigError as error:
        raise WorkflowError(f"invalid config: {error}")

    configfile: "config/config.yaml"


# --config values are YAML, as in the file (seeds=[0,1] is a list of integers).
merge(config, typed_overrides(dict(workflow.config_settings.config)))
# One line per mistake naming the file and the key (nearest valid names for a typo), before
# Snakemake's own validation fills in the defaults.
try:
    check_schema(
        config, f"{workflow.basedir}/config/schema.yaml", *config_source(workflow)
    )
except ConfigError as error:
    raise WorkflowError(f"invalid config:\n{error}")
validate(config, "config/schema.yaml", set_default=True)


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/classifier.smk"
include: "rules/purifier.smk"
include: "rules/finetune.smk"
include: "rules/evaluate.smk"
include: "rules/report.smk"
include: "rules/diagnostics.smk"
include: "rules/stages.smk"


rule all:
    default_target: True
    input:
        all_targets(),
