rule report:
    input:
        lambda w: evaluation_results(w.experiment),
    output:
        table="results/{experiment}/report/robustness.csv",
        markdown="results/{experiment}/report/robustness.md",
        figure=report(
            "results/{experiment}/report/robust_accuracy.png",
            caption="../report/robust_accuracy.rst",
            category="Robustness",
        ),
        metrics="results/{experiment}/report/metrics.json",
    log:
        "results/{experiment}/logs/report.log",
    benchmark:
        "results/{experiment}/benchmarks/report.tsv"
    conda:
        ENV
    shell:
        "python -m atop report --experiment {wildcards.experiment} --results {input}"
        " --out-dir results/{wildcards.experiment}/report > {log} 2>&1"
