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
    threads: TRAIN_THREADS
    resources:
        gpu=GPU,
    params:
        code=code_version("train-classifier"),
        spec=spec("classifier", performance=performance("training")),
    shell:
        "python -m atop train-classifier --spec {params.spec:q} --data {input.data}"
        " --out-checkpoint {output.checkpoint} --out-curve {output.curve} > {log} 2>&1"


# The paper's "AT" baseline row: PGD adversarial training of the same architecture.
rule train_adversarial:
    input:
        data="results/{experiment}/data/dataset.pt",
    output:
        checkpoint="models/{experiment}/classifier_adversarial.pt",
        curve="results/{experiment}/curves/classifier_adversarial.csv",
    log:
        "results/{experiment}/logs/train_adversarial.log",
    benchmark:
        "results/{experiment}/benchmarks/train_adversarial.tsv"
    conda:
        ENV
    threads: TRAIN_THREADS
    resources:
        gpu=GPU,
    params:
        code=code_version("train-adversarial"),
        spec=adversarial_training_spec(),
    shell:
        "python -m atop train-adversarial --spec {params.spec:q} --data {input.data}"
        " --out-checkpoint {output.checkpoint} --out-curve {output.curve} > {log} 2>&1"
