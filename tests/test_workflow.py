"""The whole workflow through Snakemake on a tiny config, and config errors before any job."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest
import torch
import yaml

from conftest import run_snakemake, tiny_config, write_config

pytestmark = pytest.mark.workflow


def test_tiny_workflow_end_to_end(workflow_dir):
    """Two training seeds, the second a replicate as in the default (config ``replicates``): seed 0 runs every
    stage, seed 1 trains the classifier and the purifier chain and scores ap and atop under eot_pgd; one
    report across them. (Every seed running everything: tests/test_replicates.py's dry runs.)"""
    config = tiny_config()
    config["seeds"] = [0, 1]
    config["replicates"] = {"defenses": ["ap", "atop"], "attacks": ["eot_pgd"]}
    configfile = write_config(workflow_dir, config)
    run = run_snakemake(workflow_dir, "--cores", "2", "all", "--configfile", str(configfile))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    results, models = workflow_dir / "results" / "tiny", workflow_dir / "models" / "tiny"
    manifest = json.loads((results / "data" / "manifest.json").read_text())
    assert manifest["sizes"] == {"train": 200, "val": 40, "test": 60}
    assert manifest["split_seed"] == 0 and len(manifest["file_sha256"]) == 64

    checkpoints = {
        "classifier": "classifier/seed{seed}.pt",
        "classifier_adversarial": "classifier_adversarial/seed{seed}.pt",
        "pretrained": "purifier_pretrained/seed{seed}/gan-rt2.pt",
        "finetuned": "purifier_finetuned/seed{seed}/gan-rt2.pt",
    }
    per_seed_checkpoints = {0: list(checkpoints), 1: [name for name in checkpoints if name != "classifier_adversarial"]}
    assert not (models / "classifier_adversarial" / "seed1.pt").exists(), "the AT baseline stays on seed 0"
    weights = {}
    for seed, names in per_seed_checkpoints.items():
        for name in names:
            path = checkpoints[name]
            payload = torch.load(models / path.format(seed=seed), weights_only=True)
            assert payload["meta"]["provenance"]["versions"]["torch"].startswith("2.14.1")
            assert payload["meta"]["seed"] == seed, (name, seed)
            weights[name, seed] = payload["state_dict"]
        assert torch.load(models / checkpoints["finetuned"].format(seed=seed), weights_only=True)["meta"]["stage"] == (
            "finetuned"
        )
    for name in per_seed_checkpoints[1]:  # each seed trains its own weights (buffers such as normalisation agree)
        zero, one = weights[name, 0], weights[name, 1]
        assert any(not torch.equal(zero[key], one[key]) for key in zero), f"{name}: seeds are replicates"
    curves = {
        "classifier/seed{seed}": 2,
        "classifier_adversarial/seed{seed}": 2,
        "purifier_pretrain/seed{seed}/gan-rt2": 1,
        "purifier_finetune/seed{seed}/gan-rt2": 1,
    }
    for seed in (0, 1):
        for curve, epochs in curves.items():
            if seed == 1 and curve.startswith("classifier_adversarial"):
                continue
            assert len(pd.read_csv(results / "curves" / f"{curve.format(seed=seed)}.csv")) == epochs
        monitored_curves = ("classifier_adversarial/seed{seed}", "purifier_finetune/seed{seed}/gan-rt2")
        for curve in monitored_curves[seed:]:  # the monitors (seed 1 has no AT baseline)
            monitored = pd.read_csv(results / "curves" / f"{curve.format(seed=seed)}.csv")
            for column in ("train_clean", "train_fgsm", "train_pgd", "val_clean", "val_fgsm", "val_pgd"):
                assert monitored[column].between(0, 1).all(), (curve, column)
        check = json.loads((results / "finetune_checks" / f"seed{seed}" / "gan-rt2.json").read_text())
        assert check["draws"] == 1

    evaluated = [(0, d, a) for d in ("standard", "at", "ap", "atop") for a in ("fgsm", "eot_pgd")]
    evaluated += [(1, d, "eot_pgd") for d in ("ap", "atop")]  # the replicates
    assert not (results / "eval" / "seed1" / "atop" / "fgsm.json").exists()
    assert not (results / "eval" / "seed1" / "standard").exists()
    indices = set()
    for seed, defense, attack in evaluated:
        result = json.loads((results / "eval" / f"seed{seed}" / defense / f"{attack}.json").read_text())
        clean, robust = result["clean"]["accuracy"], result["robust"]["accuracy"]
        assert 0 <= robust <= 1 and 0 <= clean <= 1
        assert robust <= clean, (seed, defense, attack, clean, robust)
        assert result["n"] == 40 and result["max_perturbation_linf"] <= 64 / 255 + 1e-6
        assert result["draws"] == (1 if defense in ("standard", "at") else 2)
        assert result["defense_kind"] == defense and result["seed"] == seed
        if defense in ("ap", "atop"):  # bare names: the only variant, recorded in the result
            assert (result["purifier_variant"], result["purifier"], result["transform"]) == (
                "gan-rt2",
                "gan_unet",
                "rt2",
            )
        indices.add(tuple(result["sample_indices"]))
        assert (results / "logs" / "evaluate" / f"seed{seed}" / defense / f"{attack}.log").is_file()
        assert (results / "benchmarks" / "evaluate" / f"seed{seed}" / defense / f"{attack}.tsv").is_file()
    assert len(indices) == 1, "every seed, defense and attack must see the same test images"

    report = results / "report"
    table = pd.read_csv(report / "robustness.csv")
    assert len(table) == 8 + 4 + 2, "seed 0: eight (defense, attack) results and four sweep points; seed 1: two"
    assert sorted(table["seed"].unique()) == [0, 1]
    assert not (results / "sweeps" / "seed1").exists() and not (results / "obfuscation_checks" / "seed1.json").exists()
    seed = 0  # the sweeps and checks stay on seed 0
    for point, eps in ((0, 0.0), (1, 128 / 255)):
        swept = json.loads((results / "sweeps" / f"seed{seed}" / "eps" / "atop" / f"{point}.json").read_text())
        assert swept["sweep"]["value"] == pytest.approx(eps) and swept["n"] == 20
    assert swept["robust"]["accuracy"] <= swept["clean"]["accuracy"]
    checks = json.loads((results / "obfuscation_checks" / f"seed{seed}.json").read_text())
    assert {"per_result", "cross_attack", "sweeps", "passed", "failed"} <= set(checks)
    assert len(checks["per_result"]) >= 12 and len(checks["sweeps"]) == 3  # eps: 2, eot: 1
    metrics = json.loads((report / "metrics.json").read_text())
    assert set(metrics["defenses"]) == {"standard", "at", "ap", "atop"}
    assert all(m["worst_case"] <= m["clean"] for m in metrics["defenses"].values())
    assert metrics["missing"] == 0 and metrics["results"] == 8 + 4 + 2
    # each number is the mean over the two seeds: the table says so with its spread across seeds
    defenses = pd.read_csv(report / "tables" / "defenses.csv").set_index("defense")
    per_seed = table[~table["sweep"] & (table["attack"] == "eot_pgd")].set_index(["defense", "seed"])
    for defense in ("ap", "atop"):
        seeds = [per_seed.loc[(defense, seed), "robust_accuracy"] for seed in (0, 1)]
        assert defenses.loc[defense, "eot_pgd (seen)"] == pytest.approx(100 * sum(seeds) / 2, abs=0.01)
        assert defenses.loc[defense, "eot_pgd (seen)_seed_sd"] >= 0
    for figure in ("robust_accuracy", "robust_vs_eps", "sweeps", "training_curves"):
        assert (report / f"{figure}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (report / f"{figure}.svg").stat().st_size > 0
    assert "| atop" in (report / "robustness.md").read_text()
    summary = (report / "summary.md").read_text()
    assert "Dataset differs from the paper" in summary and "Nothing: every expected result is here" in summary
    assert "2 training seeds" in summary and "- *The method*" in summary
    assert "2 seeds on eot_pgd (the attacks every seed ran)" in summary, "the method is judged on the replicates"
    assert metrics["headline"]["method"]["seeds"] == 2, "two seeds: the method gets its own test"
    reference = pd.read_csv(report / "tables" / "reference.csv")
    assert not (reference["status"] == "comparable").any(), "a digits run must never be compared to CIFAR numbers"

    assert not (results / "diagnostics" / "seed1").exists(), "the diagnostics stay on seed 0"
    seed = 0  # the diagnostics stay on seed 0
    diagnostics = results / "diagnostics" / f"seed{seed}"
    for defense in ("standard", "at", "ap", "atop"):
        concentration = json.loads((diagnostics / "gradient_concentration" / f"{defense}.json").read_text())
        assert 0 <= concentration["mean_resultant_length"] <= 1 + 1e-6
        if defense in ("standard", "at"):
            assert concentration["mean_resultant_length"] == pytest.approx(1.0, abs=1e-4)
        measures = json.loads((diagnostics / "measures" / f"{defense}.json").read_text())
        assert set(measures["flatness"]) == (
            {"classifier", "purifier"} if defense in ("ap", "atop") else {"classifier"}
        )
        benchmark = results / "benchmarks" / "diagnostics" / f"seed{seed}" / "measures" / f"{defense}.tsv"
        assert benchmark.is_file()
    assert len(pd.read_csv(diagnostics / "measures.csv")) == 4
    in_table = pd.read_csv(diagnostics / "measures.csv").set_index("defense")["boundary_distortion"]
    assert in_table.drop("atop").isna().all(), "only fine-tuned defenses have a distortion"
    distortion = json.loads((diagnostics / "distortion" / "atop.json").read_text())
    assert distortion["points"] == 100 and distortion["draws"] == 2 and distortion["randomized"]
    assert (distortion["eligible"], distortion["distortion"]) == (0, None) or 0 <= distortion["distortion"] <= 1
    assert not (diagnostics / "distortion" / "ap.json").exists(), "distortion is measured on fine-tuned defenses"
    eot_checks = json.loads((diagnostics / "eot_checks.json").read_text())["checks"]
    assert {(c["defense"], c["attack"]) for c in eot_checks} == {("ap", "eot_pgd"), ("atop", "eot_pgd")}
    tested = {c["defense"]: c for c in eot_checks}
    assert tested["atop"]["passed"] in (True, False) and tested["atop"]["larger_eot"] == 4, "atop has a sweep"
    assert tested["ap"]["passed"] is None and "not tested" in tested["ap"]["detail"], "no EOT sweep on ap"
    for figure in ("pictures", "measures_vs_robust_accuracy", "eot_sufficiency"):
        assert (diagnostics / f"{figure}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "## Overfitting of adversarial training" in summary

    again = run_snakemake(workflow_dir, "-n", "all", "--configfile", str(configfile))
    assert again.returncode == 0
    assert "Nothing to be done" in again.stdout + again.stderr

    # Editing one attack reruns that attack's jobs and what reads them, nothing upstream.
    config["evaluation"]["attacks"]["fgsm"]["eps"] = "48/255"
    edited = write_config(workflow_dir, config, "edited.yaml")
    plan = run_snakemake(workflow_dir, "-n", "--quiet", "rules", "all", "--configfile", str(edited))
    assert plan.returncode == 0, plan.stderr[-2000:]
    listing = plan.stdout + plan.stderr
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", listing, flags=re.MULTILINE))
    assert counts.pop("total") == "7", listing  # fgsm is seed 0's only (not a replicate)
    assert counts == {"evaluate": "4", "obfuscation_checks": "1", "report": "1", "all": "1"}, listing


def _broken(change) -> dict:
    config = tiny_config()
    change(config)
    return config


def _bpda_diagnostics_attack(config: dict) -> None:
    config["evaluation"]["attacks"]["bpda"] = {"method": "bpda_eot", "eps": 0.1, "alpha": 0.05, "steps": 1, "eot": 1}
    config["diagnostics"]["attack"] = "bpda"


BAD_CONFIGS = {
    "unknown dataset": (lambda c: c["data"].update(dataset="mnist"), ["mnist", "digits", "dataset"]),
    "unknown defense": (lambda c: c["evaluation"].update(defenses=["standard", "diffpure"]), ["diffpure", "atop"]),
    "unknown attack": (
        lambda c: c["evaluation"]["attacks"].update(deepfool={"method": "deepfool", "eps": 0.5}),
        ["deepfool", "eot_pgd", "method"],
    ),
    "missing key": (lambda c: c["purifiers"]["gan-rt2"].pop("transform"), ["transform", "required"]),
    "unknown purifier variant": (
        lambda c: c["evaluation"].update(defenses=["standard", "atop", "atop-gan-rt9"]),
        ["evaluation.defenses", "atop-gan-rt9", "'gan-rt9', not in purifiers (gan-rt2)"],
    ),
    "bare ap with two variants": (
        lambda c: c["purifiers"].update({"ae-rt2": {"arch": "ae", "transform": "rt2"}}),
        ["evaluation.defenses: 'ap' names no purifier variant", "gan-rt2, ae-rt2"],
    ),
    "wrong type": (lambda c: c["classifier"].update(epochs="eight"), ["eight", "integer", "epochs"]),
    "unknown key": (lambda c: c["classifier"].update(epochs_total=3), ["epochs_total"]),
    "budget out of range": (
        lambda c: c["evaluation"]["attacks"]["fgsm"].update(eps="300/255"),
        ["evaluation.attacks.fgsm.eps", "300/255"],
    ),
    "attack missing steps": (lambda c: c["evaluation"]["attacks"]["eot_pgd"].pop("steps"), ["steps"]),
    "empty attack list": (lambda c: c["evaluation"].update(attacks={}), ["attacks", "non-empty"]),
    "path in experiment name": (lambda c: c.update(experiment="../escape"), ["../escape", "experiment"]),
    "shell in an attack name": (
        lambda c: c["evaluation"]["attacks"].update({"x;touch pwned": {"method": "fgsm", "eps": "8/255"}}),
        ["x;touch pwned"],
    ),
    "path in a purifier variant": (
        lambda c: c["purifiers"].update({"../gan": c["purifiers"]["gan-rt2"]}),
        ["../gan"],
    ),
    "zero evaluation threads": (lambda c: c.update(threads={"evaluation": 0}), ["threads", "evaluation", "0"]),
    "fp16 autocast": (
        lambda c: c.update(performance={"training": {"autocast": "fp16"}}),
        ["fp16", "autocast", "none", "bf16"],
    ),
    "negative learning rate": (lambda c: c["classifier"].update(lr=-0.1), ["-0.1", "lr"]),
    "mask rate above one": (
        lambda c: c["purifiers"]["gan-rt2"]["transform_params"].update(mask_rate=1.5),
        ["1.5", "mask_rate"],
    ),
    "one gradient draw": (
        lambda c: c["diagnostics"]["gradient_concentration"].update(draws=1),
        ["draws", "gradient_concentration", "minimum"],
    ),
    "negative flatness radius": (
        lambda c: c["diagnostics"]["measures"].update(flatness_xi=-0.5),
        ["-0.5", "flatness_xi"],
    ),
    "monitor without PGD steps": (
        lambda c: c["finetune"].update(monitor={"steps": 0}),
        ["steps", "minimum"],
    ),
    "distortion with one point": (
        lambda c: c["diagnostics"].update(distortion={"points": 1}),
        ["points", "minimum"],
    ),
    "diagnostics attack with a partial gradient": (
        _bpda_diagnostics_attack,
        ["diagnostics.attack = 'bpda' is bpda_eot"],
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_config_fails_before_any_job(workflow_dir, case):
    change, expected = BAD_CONFIGS[case]
    configfile = write_config(workflow_dir, _broken(change))
    run = run_snakemake(workflow_dir, "--cores", "1", "all", "--configfile", str(configfile), timeout=120)
    output = run.stdout + run.stderr
    assert run.returncode != 0
    for fragment in expected:
        assert fragment in output, f"{case}: {fragment!r} not in\n{output[-2000:]}"
    assert not (workflow_dir / "results").exists() and not (workflow_dir / "models").exists()
    assert not list(workflow_dir.rglob("pwned"))


# A typo in a paper preset must stop a multi-day run before its first (download) job.
PRESET_TYPOS = {
    "cifar10: misspelt attack method": (
        "cifar10",
        lambda c: c["evaluation"]["attacks"]["aa_standard"].update(method="autoatack"),
        ["autoatack", "aa_standard", "method"],
    ),
    "cifar100: misspelt top-level key": (
        "cifar100",
        lambda c: c.update(purifers=c.pop("purifiers")),
        ["purifers"],
    ),
    "imagenette: misspelt dataset": (
        "imagenette",
        lambda c: c["data"].update(dataset="imagenete"),
        ["imagenete", "dataset"],
    ),
}


@pytest.mark.parametrize("case", sorted(PRESET_TYPOS))
def test_paper_preset_with_a_typo_fails_before_any_job(workflow_dir, case):
    preset, change, expected = PRESET_TYPOS[case]
    config = yaml.safe_load((workflow_dir / "config" / "paper" / f"{preset}.yaml").read_text())
    change(config)
    configfile = write_config(workflow_dir, config)
    run = run_snakemake(workflow_dir, "--cores", "1", "all", "--configfile", str(configfile), timeout=120)
    output = run.stdout + run.stderr
    assert run.returncode != 0
    for fragment in expected:
        assert fragment in output, f"{case}: {fragment!r} not in\n{output[-2000:]}"
    assert not any((workflow_dir / name).exists() for name in ("results", "models", "data"))
