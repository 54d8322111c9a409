# One target per pipeline stage whose outputs depend on the config (one file per seed,
# variant, defense or attack): `snakemake stage_evaluation` runs every evaluation.
# DVC's generated stages (src/atop/dvc_pipeline.py) run these targets.


rule stage_classifiers:
    input:
        expand(
            (
                [
                    "models/{experiment}/classifier/seed{seed}.pt",
                    "results/{experiment}/curves/classifier/seed{seed}.csv",
                    "models/{experiment}/classifier_adversarial/seed{seed}.pt",
                    "results/{experiment}/curves/classifier_adversarial/seed{seed}.csv",
                ]
                if NEEDS_ADVERSARIAL
                else [
                    "models/{experiment}/classifier/seed{seed}.pt",
                    "results/{experiment}/curves/classifier/seed{seed}.csv",
                ]
            ),
            experiment=EXPERIMENT,
            seed=SEEDS,
        ),
    localrule: True


rule stage_purifiers:
    input:
        expand(
            [
                "models/{experiment}/purifier_pretrained/seed{seed}/{variant}.pt",
                "results/{experiment}/curves/purifier_pretrain/seed{seed}/{variant}.csv",
            ],
            experiment=EXPERIMENT,
            seed=SEEDS,
            variant=VARIANTS,
        ),
    localrule: True


rule stage_finetuning:
    input:
        expand(
            [
                "models/{experiment}/purifier_finetuned/seed{seed}/{variant}.pt",
                "results/{experiment}/curves/purifier_finetune/seed{seed}/{variant}.csv",
                "results/{experiment}/finetune_checks/seed{seed}/{variant}.json",
            ],
            experiment=EXPERIMENT,
            seed=SEEDS,
            variant=finetuned_variants(),
        ),
    localrule: True


rule stage_evaluation:
    input:
        evaluation_results(EXPERIMENT),
        sweep_results(EXPERIMENT),
        obfuscation_checks(EXPERIMENT),
    localrule: True
