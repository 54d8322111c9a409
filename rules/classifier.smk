rule train_classifier:
    input:
        data="results/{experiment}/data/dataset.pt",
    output:
        checkpoint="models/{experiment}/classifier/seed{seed}.pt",
        curve="results/{experiment}/curves/classifier/seed{seed}.csv",
    log:
        "results/{experiment}/logs/train_classifier/seed{seed}.log",
    benchmark:
        "results/{experiment}/benchmarks/train_classifier/seed{seed}.tsv"
    conda:
        ENV
    threads: TRAIN_THREADS
    resources:
        gpu=GPU,
    params:
        code=code_version("train-classifier"),
        spec=lambda w: spec(
            "classifier", seed=w.seed, performance=performance("training")
        ),
    shell:
        "python -m atop train-classifier --spec {params.spec:q} --data {input.data}"
        " --out-checkpoint {output.checkpoint} --out-curve {output.curve} > {log} 2>&1"


# The paper's "AT" baseline row: PGD adversarial training of the same architecture.
rule train_adversarial:
    input:
        data="results/{experiment}/data/dataset.pt",
    output:
        checkpoint="models/{experiment}/classifier_adversarial/seed{seed}.pt",
        curve="results/{experiment}/curves/classifier_adversarial/seed{seed}.csv",
    log:
        "results/{experiment}/logs/train_adversarial/seed{seed}.log",
    benchmark:
        "results/{experiment}/benchmarks/train_adversarial/seed{seed}.tsv"
    # the second-longest chain (AT, then its evaluations)
    priority: 1
    conda:
        ENV
    threads: TRAIN_THREADS
    resources:
        gpu=GPU,
    params:
        code=code_version("train-adversarial"),
        spec=lambda w: adversarial_training_spec(w.seed),
    shell:
        "python -m atop train-adversarial --spec {params.spec:q} --data {input.data}"
        " --out-checkpoint {output.checkpoint} --out-curve {output.curve} > {log} 2>&1"
