rule pretrain_purifier:
    input:
        data="results/{experiment}/data/dataset.pt",
    output:
        checkpoint="models/{experiment}/purifier_pretrained.pt",
        curve="results/{experiment}/curves/purifier_pretrain.csv",
    log:
        "results/{experiment}/logs/pretrain_purifier.log",
    benchmark:
        "results/{experiment}/benchmarks/pretrain_purifier.tsv"
    conda:
        ENV
    threads: 2
    resources:
        gpu=GPU,
    params:
        spec=spec("purifier"),
    shell:
        "python -m atop pretrain-purifier --spec {params.spec:q} --data {input.data}"
        " --out-checkpoint {output.checkpoint} --out-curve {output.curve} > {log} 2>&1"
