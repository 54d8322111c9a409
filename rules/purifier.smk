# One pre-training job per purifier variant (generative, on RT-transformed clean images).
rule pretrain_purifier:
    input:
        data="results/{experiment}/data/dataset.pt",
    output:
        checkpoint="models/{experiment}/purifier_pretrained/seed{seed}/{variant}.pt",
        curve="results/{experiment}/curves/purifier_pretrain/seed{seed}/{variant}.csv",
    log:
        "results/{experiment}/logs/pretrain_purifier/seed{seed}/{variant}.log",
    benchmark:
        "results/{experiment}/benchmarks/pretrain_purifier/seed{seed}/{variant}.tsv"
    # the purifier chain (pre-training, fine-tuning, then half the evaluations) is the DAG's longest: start it first
    priority: 2
    conda:
        ENV
    threads: TRAIN_THREADS
    resources:
        gpu=GPU,
    params:
        code=code_version("pretrain-purifier"),
        spec=lambda w: purifier_spec(w.variant, w.seed),
    shell:
        "python -m atop pretrain-purifier --spec {params.spec:q} --data {input.data}"
        " --out-checkpoint {output.checkpoint} --out-curve {output.curve} > {log} 2>&1"
