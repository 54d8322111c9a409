# AToP fine-tuning of each variant's purifier against the standard classifier,
# which stays fixed (the method never touches f).
rule finetune_purifier:
    input:
        data="results/{experiment}/data/dataset.pt",
        classifier="models/{experiment}/classifier.pt",
        purifier="models/{experiment}/purifier_pretrained/{variant}.pt",
    output:
        checkpoint="models/{experiment}/purifier_finetuned/{variant}.pt",
        curve="results/{experiment}/curves/purifier_finetune/{variant}.csv",
        check="results/{experiment}/finetune_checks/{variant}.json",
    log:
        "results/{experiment}/logs/finetune_purifier/{variant}.log",
    benchmark:
        "results/{experiment}/benchmarks/finetune_purifier/{variant}.tsv"
    conda:
        ENV
    threads: TRAIN_THREADS
    resources:
        gpu=GPU,
    params:
        code=code_version("finetune-purifier"),
        spec=spec("finetune", performance=performance("training")),
    shell:
        "python -m atop finetune-purifier --spec {params.spec:q} --data {input.data}"
        " --classifier {input.classifier} --purifier {input.purifier}"
        " --out-checkpoint {output.checkpoint} --out-curve {output.curve}"
        " --out-check {output.check} > {log} 2>&1"
