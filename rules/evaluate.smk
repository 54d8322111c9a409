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
    threads: EVAL_THREADS
    resources:
        gpu=GPU,
    params:
        code=code_version("evaluate"),
        spec=lambda w: evaluation_spec(w.attack),
        purifier=lambda w, input: (
            f"--purifier {input.purifier}" if "purifier" in input.keys() else ""
        ),
    shell:
        "python -m atop evaluate --spec {params.spec:q} --data {input.data}"
        " --defense {wildcards.defense} --attack {wildcards.attack}"
        " --classifier {input.classifier} {params.purifier} --out {output} > {log} 2>&1"


rule evaluate_sweep:
    input:
        unpack(evaluation_inputs),
    output:
        "results/{experiment}/sweeps/{sweep}/{defense}/{point}.json",
    log:
        "results/{experiment}/logs/sweeps/{sweep}/{defense}/{point}.log",
    benchmark:
        "results/{experiment}/benchmarks/sweeps/{sweep}/{defense}/{point}.tsv"
    conda:
        ENV
    threads: EVAL_THREADS
    resources:
        gpu=GPU,
    params:
        code=code_version("evaluate"),
        spec=lambda w: sweep_spec(w.sweep, w.point),
        attack=sweep_attack_name,
        purifier=lambda w, input: (
            f"--purifier {input.purifier}" if "purifier" in input.keys() else ""
        ),
    shell:
        "python -m atop evaluate --spec {params.spec:q} --data {input.data}"
        " --defense {wildcards.defense} --attack {params.attack:q}"
        " --classifier {input.classifier} {params.purifier} --out {output} > {log} 2>&1"


rule obfuscation_checks:
    input:
        results=lambda w: evaluation_results(w.experiment),
        sweeps=lambda w: sweep_results(w.experiment),
    output:
        "results/{experiment}/obfuscation_checks.json",
    log:
        "results/{experiment}/logs/obfuscation_checks.log",
    conda:
        ENV
    params:
        code=code_version("checks"),
    shell:
        "python -m atop checks --results {input.results} --sweeps {input.sweeps}"
        " --out {output} > {log} 2>&1"
