# Diagnostics of every evaluated defense (src/atop/diagnostics/; docs/diagnostics.md):
# gradient concentration and EOT need, robust-generalization measures, pictures, and a
# table with figures across defenses. Outputs under results/<experiment>/diagnostics/.


from atop.diagnostics.catalog import PER_DEFENSE

# One rule per per-defense diagnostic (src/atop/diagnostics/catalog.py; settings, targets and
# input functions in rules/diagnostics_common.smk): one JSON per seed and defense it covers.
for diagnostic in PER_DEFENSE:

    rule:
        name:
            diagnostic.name
        input:
            unpack(evaluation_inputs),
        output:
            diagnostic_output(diagnostic),
        log:
            f"results/{{experiment}}/logs/diagnostics/seed{{seed}}/{diagnostic.folder}/{{defense}}.log",
        benchmark:
            f"results/{{experiment}}/benchmarks/diagnostics/seed{{seed}}/{diagnostic.folder}/{{defense}}.tsv"
        conda:
            ENV
        threads: EVAL_THREADS
        resources:
            gpu=GPU,
        params:
            code=code_version(
                diagnostic.command,
                [DIAGNOSTICS_ATTACK] if diagnostic.attacks else None,
            ),
            spec=diagnostic_spec(diagnostic),
            defense=defense_args,
            # Through params, bound now: the shell text is evaluated again when the job runs,
            # when the loop variable names the last diagnostic.
            command=diagnostic.command,
        shell:
            "python -m atop {params.command} --spec {params.spec:q} --data {input.data}"
            " --defense {wildcards.defense} {params.defense}"
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
        # every per-defense diagnostic that gives the table columns (its catalog entry's columns)
        diagnostics=[
            path
            for diagnostic in PER_DEFENSE
            if diagnostic.columns
            for path in diagnostic_files(diagnostic.name)
        ],
        results=lambda w: eot_results(w.experiment, w.seed),
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
        "python -m atop diagnostics-summary --diagnostics {input.diagnostics}"
        " --results {input.results}"
        " --out-dir results/{wildcards.experiment}/diagnostics/seed{wildcards.seed} > {log} 2>&1"


# DVC's diagnostics stage runs this target (tools/dvc_pipeline.py).
rule stage_diagnostics:
    input:
        diagnostics_targets(EXPERIMENT),
    localrule: True
