# AToP - Adversarial Training on Purification, as one reproducible DAG:
# data -> classifier and purifier pre-training -> AToP fine-tuning
#      -> one evaluation job per (defense, attack) -> report.
from snakemake.utils import min_version, validate

min_version("9.0")


# The embedded default, unless --configfile names another experiment (a preset is
# complete on its own: merging it into the default would mix two experiments).
if not workflow.config_settings.configfiles:

    configfile: "config/config.yaml"


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
