rule evaluate:
    input:
        unpack(evaluation_inputs),
    output:
        "results/{experiment}/eval/{defense}/{attack}.json",
    log:
        "results/{experiment}/logs/evaluate/{defense}/{attack}.log",
    benchmark:
        "results/{experiment}/benchmarks/evaluate/{defense}/{attack}.tsv"
    conda:
        ENV
    threads: 2
    resources:
        gpu=1,
    params:
        spec=lambda w: spec(
            "evaluation", attack=config["evaluation"]["attacks"][w.attack]
        ),
        purifier=lambda w, input: (
            f"--purifier {input.purifier}" if "purifier" in input.keys() else ""
        ),
    shell:
        "python -m atop evaluate --spec {params.spec:q} --data {input.data}"
        " --defense {wildcards.defense} --attack {wildcards.attack}"
        " --classifier {input.classifier} {params.purifier} --out {output} > {log} 2>&1"
