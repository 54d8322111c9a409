# AToP fine-tuning of each variant's purifier against the standard classifier,
# which stays fixed (the method never touches f).
rule finetune_purifier:
    input:
        data="results/{experiment}/data/dataset.pt",
        classifier="models/{experiment}/classifier/seed{seed}.pt",
        purifier="models/{experiment}/purifier_pretrained/seed{seed}/{variant}.pt",
    output:
        checkpoint="models/{experiment}/purifier_finetuned/seed{seed}/{variant}.pt",
        curve="results/{experiment}/curves/purifier_finetune/seed{seed}/{variant}.csv",
        check="results/{experiment}/finetune_checks/seed{seed}/{variant}.json",
    log:
        "results/{experiment}/logs/finetune_purifier/seed{seed}/{variant}.log",
    benchmark:
        "results/{experiment}/benchmarks/finetune_purifier/seed{seed}/{variant}.tsv"
    # on the critical path (rules/purifier.smk)
    priority: 2
    conda:
        ENV
    threads: TRAIN_THREADS
    resources:
        gpu=GPU,
    params:
        code=code_version("finetune-purifier"),
        spec=lambda w: spec(
            "finetune", seed=w.seed, performance=performance("training")
        ),
    shell:
        "python -m atop finetune-purifier --spec {params.spec:q} --data {input.data}"
        " --classifier {input.classifier} --purifier {input.purifier}"
        " --out-checkpoint {output.checkpoint} --out-curve {output.curve}"
        " --out-check {output.check} > {log} 2>&1"
