rule train_classifier:
    input:
        data="results/{experiment}/data/dataset.pt",
    output:
        checkpoint="models/{experiment}/classifier.pt",
        curve="results/{experiment}/curves/classifier.csv",
    params:
        spec=spec("classifier"),
    threads: 2
    resources:
        gpu=1,
    log:
        "results/{experiment}/logs/train_classifier.log",
    benchmark:
        "results/{experiment}/benchmarks/train_classifier.tsv"
    shell:
        "{ATOP} train-classifier --spec {params.spec:q} --data {input.data}"
        " --out-checkpoint {output.checkpoint} --out-curve {output.curve} > {log} 2>&1"
