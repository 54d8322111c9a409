rule finetune_purifier:
    input:
        data="results/{experiment}/data/dataset.pt",
        classifier="models/{experiment}/classifier.pt",
        purifier="models/{experiment}/purifier_pretrained.pt",
    output:
        checkpoint="models/{experiment}/purifier_finetuned.pt",
        curve="results/{experiment}/curves/purifier_finetune.csv",
        check="results/{experiment}/finetune_check.json",
    log:
        "results/{experiment}/logs/finetune_purifier.log",
    benchmark:
        "results/{experiment}/benchmarks/finetune_purifier.tsv"
    conda:
        ENV
    threads: 2
    resources:
        gpu=GPU,
    params:
        spec=spec("finetune"),
    shell:
        "python -m atop finetune-purifier --spec {params.spec:q} --data {input.data}"
        " --classifier {input.classifier} --purifier {input.purifier}"
        " --out-checkpoint {output.checkpoint} --out-curve {output.curve}"
        " --out-check {output.check} > {log} 2>&1"
