# One pre-training job per purifier variant (generative, on RT-transformed clean images).
rule pretrain_purifier:
    input:
        data="results/{experiment}/data/dataset.pt",
    output:
        checkpoint="models/{experiment}/purifiers/{variant}/pretrained.pt",
        curve="results/{experiment}/curves/purifier_pretrain_{variant}.csv",
    log:
        "results/{experiment}/logs/pretrain_purifier/{variant}.log",
    benchmark:
        "results/{experiment}/benchmarks/pretrain_purifier/{variant}.tsv"
    conda:
        ENV
    threads: 2
    resources:
        gpu=GPU,
    params:
        spec=lambda w: purifier_spec(w.variant),
    shell:
        "python -m atop pretrain-purifier --spec {params.spec:q} --data {input.data}"
        " --out-checkpoint {output.checkpoint} --out-curve {output.curve} > {log} 2>&1"
