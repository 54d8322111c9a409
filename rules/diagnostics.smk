# Diagnostics of every evaluated defense (src/atop/diagnostics/; docs/diagnostics.md):
# gradient concentration and EOT need, robust-generalization measures, pictures, and a
# table with figures across defenses. Outputs under results/<experiment>/diagnostics/.


include: "diagnostics_common.smk"


rule gradient_concentration:
    input:
        unpack(evaluation_inputs),
    output:
        f"{DIAGNOSTICS}/gradient_concentration/{{defense}}.json",
    log:
        "results/{experiment}/logs/diagnostics/seed{seed}/gradient_concentration/{defense}.log",
    benchmark:
        "results/{experiment}/benchmarks/diagnostics/seed{seed}/gradient_concentration/{defense}.tsv"
    conda:
        ENV
    threads: EVAL_THREADS
    resources:
        gpu=GPU,
    params:
        code=code_version("gradient-concentration"),
        spec=lambda w: diagnostics_spec("gradient_concentration", w.seed, attack=False),
        purifier=lambda w, input: (
            f"--purifier {input.purifier}" if "purifier" in input.keys() else ""
        ),
    shell:
        "python -m atop gradient-concentration --spec {params.spec:q} --data {input.data}"
        " --defense {wildcards.defense} --classifier {input.classifier} {params.purifier}"
        " --out {output} > {log} 2>&1"


rule robustness_measures:
    input:
        unpack(evaluation_inputs),
    output:
        f"{DIAGNOSTICS}/measures/{{defense}}.json",
    log:
        "results/{experiment}/logs/diagnostics/seed{seed}/measures/{defense}.log",
    benchmark:
        "results/{experiment}/benchmarks/diagnostics/seed{seed}/measures/{defense}.tsv"
    conda:
        ENV
    threads: EVAL_THREADS
    resources:
        gpu=GPU,
    params:
        code=code_version("robustness-measures", [DIAGNOSTICS_ATTACK]),
        spec=lambda w: diagnostics_spec("measures", w.seed),
        purifier=lambda w, input: (
            f"--purifier {input.purifier}" if "purifier" in input.keys() else ""
        ),
    shell:
        "python -m atop robustness-measures --spec {params.spec:q} --data {input.data}"
        " --defense {wildcards.defense} --classifier {input.classifier} {params.purifier}"
        " --out {output} > {log} 2>&1"


# Decision-boundary distortion (Kim, Lee & Lee, AAAI 2021) of each fine-tuned defense.
rule boundary_distortion:
    input:
        unpack(evaluation_inputs),
    output:
        f"{DIAGNOSTICS}/distortion/{{defense}}.json",
    log:
        "results/{experiment}/logs/diagnostics/seed{seed}/distortion/{defense}.log",
    benchmark:
        "results/{experiment}/benchmarks/diagnostics/seed{seed}/distortion/{defense}.tsv"
    conda:
        ENV
    threads: EVAL_THREADS
    resources:
        gpu=GPU,
    params:
        code=code_version("boundary-distortion"),
        spec=lambda w: distortion_spec(w.seed),
        purifier=lambda w, input: (
            f"--purifier {input.purifier}" if "purifier" in input.keys() else ""
        ),
    shell:
        "python -m atop boundary-distortion --spec {params.spec:q} --data {input.data}"
        " --defense {wildcards.defense} --classifier {input.classifier} {params.purifier}"
        " --out {output} > {log} 2>&1"


rule diagnostic_pictures:
    input:
        picture_inputs,
    output:
        f"{DIAGNOSTICS}/pictures.png",
    log:
        "results/{experiment}/logs/diagnostics/seed{seed}/pictures.log",
    benchmark:
        "results/{experiment}/benchmarks/diagnostics/seed{seed}/pictures.tsv"
    conda:
        ENV
    threads: EVAL_THREADS
    resources:
        gpu=GPU,
    params:
        code=code_version("diagnostic-pictures", [DIAGNOSTICS_ATTACK]),
        spec=lambda w: diagnostics_spec("pictures", w.seed),
        data="results/{experiment}/data/dataset.pt",
        defenses=picture_defenses,
    shell:
        "python -m atop diagnostic-pictures --spec {params.spec:q} --data {params.data}"
        " {params.defenses} --out {output} > {log} 2>&1"


rule diagnostics_summary:
    input:
        measures=expand(
            f"{DIAGNOSTICS}/measures/{{defense}}.json",
            defense=DEFENSES,
            allow_missing=True,
        ),
        concentration=expand(
            f"{DIAGNOSTICS}/gradient_concentration/{{defense}}.json",
            defense=DEFENSES,
            allow_missing=True,
        ),
        results=lambda w: eot_results(w.experiment, w.seed),
        distortion=expand(
            f"{DIAGNOSTICS}/distortion/{{defense}}.json",
            defense=FINETUNED_DEFENSES,
            allow_missing=True,
        ),
    output:
        [f"{DIAGNOSTICS}/{name}" for name in DIAGNOSTICS_SUMMARY],
    log:
        "results/{experiment}/logs/diagnostics/seed{seed}/summary.log",
    benchmark:
        "results/{experiment}/benchmarks/diagnostics/seed{seed}/summary.tsv"
    conda:
        ENV
    params:
        code=code_version("diagnostics-summary"),
    shell:
        "python -m atop diagnostics-summary --measures {input.measures}"
        " --concentration {input.concentration} --results {input.results}"
        " --distortion {input.distortion}"
        " --out-dir results/{wildcards.experiment}/diagnostics/seed{wildcards.seed} > {log} 2>&1"


# DVC's diagnostics stage runs this target (tools/dvc_pipeline.py).
rule stage_diagnostics:
    input:
        expand(
            f"{DIAGNOSTICS}/{{part}}/{{defense}}.json",
            experiment=EXPERIMENT,
            seed=FULL_SEEDS,
            part=["gradient_concentration", "measures"],
            defense=DEFENSES,
        ),
        diagnostics_targets(EXPERIMENT),
    localrule: True
