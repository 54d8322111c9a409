"""Training-seed replicates: the seed fan-out of the DAG and the report's judgement across seeds."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import yaml
from scipy.stats import binomtest

from atop.report import write_report
from atop.report.comparisons import METHOD, paired
from atop.report.estimates import Outcomes
from atop.report.verdicts import NOISE, SUPPORTED

from conftest import run_snakemake
from report_fixtures import digits_like_results

REPO = Path(__file__).resolve().parents[1]


def test_seeds_config_mirrors_the_default():
    """config/digits-seeds.yaml is the default with more seeds: nothing else may drift."""
    default = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    seeds = yaml.safe_load((REPO / "config" / "digits-seeds.yaml").read_text())
    more, fewer = seeds.pop("seeds"), default.pop("seeds")
    assert fewer == [0, 1, 2] and len(more) > len(fewer) and more[: len(fewer)] == fewer
    assert seeds.pop("experiment") == "digits-seeds" and default.pop("experiment") == "digits"
    assert seeds == default


@pytest.mark.parametrize("seeds", [[], [0, 0], [-1], 0, ["a"]])
def test_bad_seeds_are_refused_by_the_schema(seeds):
    schema = yaml.safe_load((REPO / "config" / "schema.yaml").read_text())
    config = yaml.safe_load((REPO / "config" / "tiny.yaml").read_text())
    config["seeds"] = seeds
    with pytest.raises(jsonschema.ValidationError, match="seeds|0|-1|a|\\[\\]"):
        jsonschema.validate(config, schema)


def _job_counts(output: str) -> dict[str, int]:
    table = output[output.index("Job stats:") :].split("\n\n")[0]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.MULTILINE)}


@pytest.mark.workflow
def test_seeds_fan_out_every_job_and_replicates_only_what_they_name(workflow_dir):
    one_seed = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    one_seed["seeds"], one_seed["replicates"] = [0], None
    single_path = workflow_dir / "one-seed.yaml"
    single_path.write_text(yaml.safe_dump(one_seed))
    full = yaml.safe_load((REPO / "config" / "digits-seeds.yaml").read_text())
    full["seeds"], full["replicates"] = [0, 1, 2], None
    full_path = workflow_dir / "full.yaml"
    full_path.write_text(yaml.safe_dump(full))
    runs = {
        name: run_snakemake(workflow_dir, "-n", "all", *(["--configfile", str(path)] if path else []), timeout=300)
        for name, path in (("one", single_path), ("full", full_path), ("default", None))
    }
    for name, run in runs.items():
        assert run.returncode == 0, (name, run.stderr[-2000:])
    single, triple, default = (_job_counts(runs[n].stdout + runs[n].stderr) for n in ("one", "full", "default"))
    shared = {"prepare_data", "report", "all", "total"}  # the data and the report are shared by the seeds
    for rule, count in single.items():
        if rule not in shared:
            assert triple[rule] == 3 * count, (rule, count, triple[rule])
    # the default's replicates: seeds 1 and 2 train the classifier and the purifier chain and score
    # ap and atop under eot_pgd; the AT baseline, sweeps, checks and diagnostics stay on seed 0
    for rule in ("train_classifier", "pretrain_purifier", "finetune_purifier"):
        assert default[rule] == 3, rule
    assert default["train_adversarial"] == 1 and default["evaluate"] == single["evaluate"] + 2 * 2
    for rule in ("evaluate_sweep", "obfuscation_checks", "gradient_concentration", "diagnostics_summary"):
        assert default[rule] == single[rule], rule
    listing = runs["default"].stdout + runs["default"].stderr
    for seed in (1, 2):
        assert f"results/digits/eval/seed{seed}/atop/eot_pgd.json" in listing
        assert f"results/digits/eval/seed{seed}/atop/square.json" not in listing
        assert f"models/digits/classifier_adversarial/seed{seed}.pt" not in listing


# --------------------------------------------------------------------------- statistics across seeds


def test_across_seeds_the_image_is_the_unit_and_the_seed_decides_the_method():
    """Per seed (a right only, b right only) on the same 20 images: (6, 1), (5, 2), (7, 0)."""
    splits = [(6, 1, 13), (5, 2, 13), (7, 0, 13)]
    fa, fb = [], []
    for a_only, b_only, both in splits:
        fa.append([1.0] * a_only + [0.0] * b_only + [1.0] * both)
        fb.append([0.0] * a_only + [1.0] * b_only + [1.0] * both)
    seeds, images = (0, 1, 2), tuple(range(20))
    a = Outcomes(seeds, ("pgd",), images, np.array(fa)[:, None, :], 1)
    b = Outcomes(seeds, ("pgd",), images, np.array(fb)[:, None, :], 1)
    test = paired(a, b, seed=0)
    # the images, not (seed, image) units: each image's difference averaged over the seeds sharing it
    average = (np.array(fa) - np.array(fb)).mean(axis=0)
    assert (test.model.a_better, test.model.b_better) == (int((average > 0).sum()), int((average < 0).sum()))
    assert test.model.p_value == pytest.approx(binomtest(test.model.a_better, test.model.discordant, 0.5).pvalue)
    assert test.n == 20 and test.seeds == 3 and test.units() == "20 images x 3 seeds"
    assert test.method.seed_means == pytest.approx([5 / 20, 3 / 20, 7 / 20])
    assert test.method.df == 2 and test.method.low < 0.25 < test.method.high
    assert "3 seeds, 20 images:" in test.method_text() and "per seed +25.0, +15.0, +35.0" in test.method_text()


# --------------------------------------------------------------------------- the report across seeds


def _replicate_report(tmp_path: Path, shifts: dict[int, float]):
    """digits-like results of one training seed per entry (AToP's shift over AP for that seed)."""
    for seed, shift in shifts.items():
        for result in digits_like_results(atop_shift=shift, n=128, seed=seed):
            result["seed"] = seed
            path = tmp_path / "eval" / f"seed{seed}" / result["defense"] / f"{result['attack']}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(result))
    metrics = write_report(
        [tmp_path / "eval"], tmp_path / "report", "digits", "digits", purifier="gan_unet", transform="rt2"
    )
    return metrics, (tmp_path / "report" / "summary.md").read_text(), tmp_path / "report"


def test_a_claim_holding_in_every_seed_is_supported_with_mean_and_sd(tmp_path):
    metrics, summary, report = _replicate_report(tmp_path, {0: 2.0, 1: 2.0, 2: 2.0})
    assert metrics["claims"]["ft_improves_over_ap"][METHOD] == SUPPORTED
    assert metrics["headline"]["method"]["seeds"] == 3 and len(metrics["headline"]["method"]["per_seed"]) == 3
    assert "3 training seeds" in summary and "128 images x 3 seeds" in summary
    headline = next(line for line in summary.splitlines() if line.startswith("**Headline"))
    assert "same 128 images x 3 seeds" in headline
    assert metrics["results"] == 27 and metrics["missing"] == 0
    table = (report / "tables" / "defenses.md").read_text()
    assert re.search(r"\d+\.\d ± \d+\.\d \[", table), "each number carries its spread across seeds"
    csv = (report / "tables" / "defenses.csv").read_text()
    assert "eot_pgd (seen)_seed_sd" in csv or "eot_pgd_seed_sd" in csv


def test_a_seed_that_disagrees_keeps_the_method_undecided_and_says_what_would_decide_it(tmp_path):
    metrics, summary, _ = _replicate_report(tmp_path, {0: 3.0, 1: 3.0, 2: -3.0})
    claim = metrics["claims"]["ft_improves_over_ap"]
    assert claim[METHOD] == NOISE, summary
    headline = metrics["headline"]["method"]
    assert headline["outcome"] == "none" and 0 <= headline["power_at_observed"] < 0.8
    assert "seeds give power" in summary
    assert "The method: supported" not in summary and metrics["decided_on"] == METHOD
    method_line = next(line for line in summary.splitlines() if line.startswith("- *The method*"))
    assert method_line.endswith("*(leads the verdict)*")


def test_replicates_decide_the_method_on_the_attacks_every_seed_ran(tmp_path):
    """config replicates: seed 0 runs everything, seeds 1-3 only ap / atop under eot_pgd."""
    for seed in range(4):
        for result in digits_like_results(atop_shift=2.0, n=128, seed=seed):
            if seed and (result["defense"] not in ("ap", "atop") or result["attack"] != "eot_pgd"):
                continue
            if seed:  # replicates.n_samples: the first 64 of seed 0's images
                result["sample_indices"] = result["sample_indices"][:64]
                for key in ("clean_correct_fraction", "robust_correct_fraction"):
                    result["per_sample"][key] = result["per_sample"][key][:64]
            result["seed"] = seed
            path = tmp_path / "eval" / f"seed{seed}" / result["defense"] / f"{result['attack']}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(result))
    metrics = write_report(
        [tmp_path / "eval"],
        tmp_path / "report",
        "digits",
        "digits",
        purifier="gan_unet",
        transform="rt2",
        verdicts={"decide_on": "method"},
    )
    headline = metrics["headline"]
    assert headline["seeds"] == 1 and headline["images"] == 128, "these models: seed 0, every attack"
    assert headline["method"]["seeds"] == 4 and len(headline["method"]["per_seed"]) == 4
    assert headline["method"]["outcome"] == "higher" and metrics["claims"]["ft_improves_over_ap"][METHOD] == SUPPORTED
    summary = (tmp_path / "report" / "summary.md").read_text()
    assert "4 seeds on eot_pgd (the attacks every seed ran), 64 images" in summary
    # the image level pairs the seeds both defenses ran: seed 0's 128 images, not the replicates' 64
    from atop.report.comparisons import _compare
    from atop.report.results import load_results

    frame, _ = load_results([tmp_path / "eval"], "gan_unet", "rt2")
    rows_a, rows_b = frame[frame["defense"] == "atop"], frame[frame["defense"] == "standard"]
    clean = _compare("atop vs standard, clean", ("atop", "standard"), (), rows_a, rows_b, clean=True)
    assert clean.paired.images == 128 and clean.paired.seeds == 1
    # claims whose defenses ran under one seed only stay undecided for the method
    assert metrics["claims"]["atop_over_standard"][METHOD] == "undecided"
