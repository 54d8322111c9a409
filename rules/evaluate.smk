rule evaluate:
    input:
        unpack(evaluation_inputs),
    output:
        "results/{experiment}/eval/seed{seed}/{defense}/{attack}.json",
    log:
        "results/{experiment}/logs/evaluate/seed{seed}/{defense}/{attack}.log",
    benchmark:
        "results/{experiment}/benchmarks/evaluate/seed{seed}/{defense}/{attack}.tsv"
    conda:
        ENV
    threads: EVAL_THREADS
    resources:
        gpu=GPU,
    params:
        code=lambda w: code_version("evaluate", [w.attack]),
        spec=lambda w: evaluation_spec(w.attack, w.seed),
        defense=defense_args,
    shell:
        "python -m atop evaluate --spec {params.spec:q} --data {input.data}"
        " --defense {wildcards.defense} --attack {wildcards.attack}"
        " {params.defense} --out {output} > {log} 2>&1"


rule evaluate_sweep:
    input:
        unpack(evaluation_inputs),
    output:
        "results/{experiment}/sweeps/seed{seed}/{sweep}/{defense}/{point}.json",
    log:
        "results/{experiment}/logs/sweeps/seed{seed}/{sweep}/{defense}/{point}.log",
    benchmark:
        "results/{experiment}/benchmarks/sweeps/seed{seed}/{sweep}/{defense}/{point}.tsv"
    conda:
        ENV
    threads: EVAL_THREADS
    resources:
        gpu=GPU,
    params:
        code=lambda w: code_version("evaluate", [SWEEPS[w.sweep]["attack"]]),
        spec=lambda w: sweep_spec(w.sweep, w.point, w.seed),
        attack=sweep_attack_name,
        defense=defense_args,
    shell:
        "python -m atop evaluate --spec {params.spec:q} --data {input.data}"
        " --defense {wildcards.defense} --attack {params.attack:q}"
        " {params.defense} --out {output} > {log} 2>&1"


rule evaluate_protocol:
    input:
        unpack(evaluation_inputs),
    output:
        "results/{experiment}/protocols/seed{seed}/{defense}/{protocol}.json",
    log:
        "results/{experiment}/logs/protocols/seed{seed}/{defense}/{protocol}.log",
    benchmark:
        "results/{experiment}/benchmarks/protocols/seed{seed}/{defense}/{protocol}.tsv"
    conda:
        ENV
    threads: EVAL_THREADS
    resources:
        gpu=GPU,
    params:
        code=lambda w: code_version("evaluate", [PROTOCOL_SETTINGS["attack"]]),
        spec=lambda w: protocol_spec(w.protocol, w.seed),
        attack=lambda w: PROTOCOL_SETTINGS["attack"],
        defense=defense_args,
    shell:
        "python -m atop evaluate --spec {params.spec:q} --data {input.data}"
        " --defense {wildcards.defense} --attack {params.attack:q}"
        " {params.defense} --out {output} > {log} 2>&1"


rule obfuscation_checks:
    input:
        results=lambda w: evaluation_results(w.experiment, [w.seed]),
        sweeps=lambda w: sweep_results(w.experiment, [w.seed]),
    output:
        "results/{experiment}/obfuscation_checks/seed{seed}.json",
    log:
        "results/{experiment}/logs/obfuscation_checks/seed{seed}.log",
    conda:
        ENV
    params:
        code=code_version("checks"),
    shell:
        "python -m atop checks --results {input.results} --sweeps {input.sweeps}"
        " --out {output} > {log} 2>&1"


rule check_defense:
    input:
        unpack(lambda w: defense_inputs(w, checked=False)),
    output:
        DEFENSE_CHECK,
    log:
        "results/{experiment}/logs/defense_checks/seed{seed}/{defense}.log",
    conda:
        ENV
    threads: EVAL_THREADS
    resources:
        gpu=GPU,
    params:
        code=code_version("check-defense"),
        spec=lambda w: spec(
            seed=w.seed,
            evaluation={
                k: config["evaluation"][k] for k in ("n_samples", "sample_seed")
            },
            performance=performance("evaluation"),
        ),
        defense=defense_args,
    shell:
        "python -m atop check-defense --spec {params.spec:q} --data {input.data}"
        " --defense {wildcards.defense} {params.defense} --out {output} > {log} 2>&1"
