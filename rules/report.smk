# The reproduction report. The rule waits for every result; for a report on the
# results that exist so far (some attacks still running), run the same command
# by hand into another folder (docs/report.md: the partial report).
REPORT = "results/{experiment}/report"


rule report:
    input:
        results=lambda w: evaluation_results(w.experiment),
        sweeps=lambda w: sweep_results(w.experiment),
        checks=lambda w: [
            *obfuscation_checks(w.experiment),
            # the EOT each randomized defense's gradient spread needs (rules/diagnostics.smk)
            *eot_checks(w.experiment),
        ],
        curves=lambda w: training_curves(w.experiment),
        protocols=lambda w: protocol_results(w.experiment),
        reference=REFERENCE_NUMBERS,
    output:
        table=f"{REPORT}/robustness.csv",
        markdown=f"{REPORT}/robustness.md",
        summary=f"{REPORT}/summary.md",
        # the verdicts open the HTML report: report/workflow.rst includes this file
        verdicts=report(
            f"{REPORT}/summary.rst",
            caption="../report/summary.rst",
            category="Verdicts",
        ),
        metrics=f"{REPORT}/metrics.json",
        tables=expand(
            f"{REPORT}/tables/{{name}}.{{ext}}",
            name=REPORT_TABLES,
            ext=["csv", "md"],
            allow_missing=True,
        ),
        figures=[
            report(
                f"{REPORT}/{name}.png",
                caption=f"../report/{name}.rst",
                category="Reproduction report",
            )
            for name in REPORT_FIGURES
        ],
        vectors=expand(
            f"{REPORT}/{{name}}.svg", name=REPORT_FIGURES, allow_missing=True
        ),
    log:
        "results/{experiment}/logs/report.log",
    benchmark:
        "results/{experiment}/benchmarks/report.tsv"
    conda:
        ENV
    params:
        code=code_version("report"),
        dataset=config["data"]["dataset"],
        purifier=report_purifier_args(),
        # thresholds of the overfitting detectors flagged in the summary (src/atop/diagnostics/detectors.py)
        overfitting=json.dumps(config["diagnostics"]["overfitting"], sort_keys=True),
        # which question leads the headline, and the reproduction margin (docs/verdicts.md)
        verdicts=json.dumps(config["verdicts"], sort_keys=True),
    shell:
        "python -m atop report --experiment {wildcards.experiment} --dataset {params.dataset}"
        " {params.purifier}"
        " --results {input.results} {input.sweeps} --expected {input.results} {input.sweeps}"
        " --checks {input.checks} --curves {input.curves} --protocols {input.protocols}"
        " --overfitting {params.overfitting:q}"
        " --verdicts {params.verdicts:q}"
        " --reference {input.reference} --out-dir results/{wildcards.experiment}/report > {log} 2>&1"
