rule train_classifier:
    input:
        data="results/{experiment}/data/dataset.pt",
    output:
        checkpoint="models/{experiment}/classifier.pt",
        curve="results/{experiment}/curves/classifier.csv",
    log:
        "results/{experiment}/logs/train_classifier.log",
    benchmark:
        "results/{experiment}/benchmarks/train_classifier.tsv"
    conda:
        ENV
    threads: 2
    resources:
        gpu=GPU,
    params:
        spec=spec("classifier"),
    shell:
        "python -m atop train-classifier --spec {params.spec:q} --data {input.data}"
        " --out-checkpoint {output.checkpoint} --out-curve {output.curve} > {log} 2>&1"
