# One target per pipeline stage whose outputs depend on the config (one file per seed,
# variant, defense or attack): `snakemake stage_evaluation` runs every evaluation.
# DVC's generated stages (tools/dvc_pipeline.py) run these targets.


rule stage_classifiers:
    input:
        [
            target.format(experiment=EXPERIMENT, seed=seed)
            for seed in SEEDS
            for target in [
                "models/{experiment}/classifier/seed{seed}.pt",
                "results/{experiment}/curves/classifier/seed{seed}.csv",
                *(
                    [
                        "models/{experiment}/classifier_adversarial/seed{seed}.pt",
                        "results/{experiment}/curves/classifier_adversarial/seed{seed}.csv",
                    ]
                    if needs_adversarial(seed)
                    else []
                ),
            ]
        ],
    localrule: True


rule stage_purifiers:
    input:
        [
            target.format(experiment=EXPERIMENT, seed=seed, variant=variant)
            for seed in SEEDS
            for variant in pretrained_variants(seed)
            for target in [
                "models/{experiment}/purifier_pretrained/seed{seed}/{variant}.pt",
                "results/{experiment}/curves/purifier_pretrain/seed{seed}/{variant}.csv",
            ]
        ],
    localrule: True


rule stage_finetuning:
    input:
        [
            target.format(experiment=EXPERIMENT, seed=seed, variant=variant)
            for seed in SEEDS
            for variant in finetuned_variants(seed)
            for target in [
                "models/{experiment}/purifier_finetuned/seed{seed}/{variant}.pt",
                "results/{experiment}/curves/purifier_finetune/seed{seed}/{variant}.csv",
                "results/{experiment}/finetune_checks/seed{seed}/{variant}.json",
            ]
        ],
    localrule: True


rule stage_evaluation:
    input:
        evaluation_results(EXPERIMENT),
        sweep_results(EXPERIMENT),
        protocol_results(EXPERIMENT),
        obfuscation_checks(EXPERIMENT),
    localrule: True
