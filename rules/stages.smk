# One target per pipeline stage whose outputs depend on the config (one file per
# variant, defense or attack): `snakemake stage_evaluation` runs every evaluation.
# DVC's generated stages (src/atop/dvc_pipeline.py) run these targets.


rule stage_purifiers:
    input:
        expand(
            [
                "models/{experiment}/purifier_pretrained/{variant}.pt",
                "results/{experiment}/curves/purifier_pretrain/{variant}.csv",
            ],
            experiment=EXPERIMENT,
            variant=VARIANTS,
        ),
    localrule: True


rule stage_finetuning:
    input:
        expand(
            [
                "models/{experiment}/purifier_finetuned/{variant}.pt",
                "results/{experiment}/curves/purifier_finetune/{variant}.csv",
                "results/{experiment}/finetune_checks/{variant}.json",
            ],
            experiment=EXPERIMENT,
            variant=finetuned_variants(),
        ),
    localrule: True


rule stage_evaluation:
    input:
        evaluation_results(EXPERIMENT),
        sweep_results(EXPERIMENT),
        f"results/{EXPERIMENT}/obfuscation_checks.json",
    localrule: True
