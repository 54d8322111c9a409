rule prepare_data:
    output:
        data="results/{experiment}/data/dataset.pt",
        manifest="results/{experiment}/data/manifest.json",
    log:
        "results/{experiment}/logs/prepare_data.log",
    benchmark:
        "results/{experiment}/benchmarks/prepare_data.tsv"
    conda:
        ENV
    params:
        code=code_version("prepare-data"),
        spec=spec("data"),
    shell:
        "python -m atop prepare-data --spec {params.spec:q}"
        " --out-data {output.data} --out-manifest {output.manifest} > {log} 2>&1"
