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
from atop.report.summary import SPLIT, SUPPORTED, paired
from atop.report.tables import Outcomes
from atop.stats import bootstrap_mean_interval, paired_draw_bootstrap, resample_units

from conftest import run_snakemake
from report_fixtures import digits_like_results

REPO = Path(__file__).resolve().parents[1]


def test_seeds_config_mirrors_the_default():
    """config/digits-seeds.yaml is the default with three seeds: nothing else may drift."""
    default = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    seeds = yaml.safe_load((REPO / "config" / "digits-seeds.yaml").read_text())
    assert seeds.pop("seeds") == [0, 1, 2] and default.pop("seeds") == [0]
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
def test_three_seeds_fan_out_every_training_and_evaluation_job(workflow_dir):
    one = run_snakemake(workflow_dir, "-n", "all", timeout=300)
    three = run_snakemake(workflow_dir, "-n", "all", "--configfile", "config/digits-seeds.yaml", timeout=300)
    assert one.returncode == 0 and three.returncode == 0, three.stderr[-2000:]
    single, triple = _job_counts(one.stdout + one.stderr), _job_counts(three.stdout + three.stderr)
    shared = {"prepare_data", "report", "all", "total"}  # the data and the report are shared by the seeds
    for rule, count in single.items():
        if rule not in shared:
            assert triple[rule] == 3 * count, (rule, count, triple[rule])
    for rule in ("train_classifier", "train_adversarial", "pretrain_purifier", "finetune_purifier"):
        assert triple[rule] == 3
    assert triple["prepare_data"] == triple["report"] == 1
    assert triple["total"] == 3 * (single["total"] - 3) + 3
    listing = three.stdout + three.stderr
    for seed in (0, 1, 2):
        assert f"models/digits-seeds/classifier/seed{seed}.pt" in listing
        assert f"results/digits-seeds/eval/seed{seed}/atop/eot_pgd.json" in listing


# --------------------------------------------------------------------------- statistics across seeds


def test_hierarchical_resampling_draws_whole_seeds_then_images_within_them():
    groups = [0] * 5 + [1] * 5 + [2] * 5
    rows = resample_units(np.random.default_rng(0), 200, 15, groups)
    assert rows.shape == (200, 15)
    blocks = rows.reshape(200, 3, 5) // 5  # the seed each resampled unit came from
    assert (blocks == blocks[:, :, :1]).all(), "a block of a resample holds units of one seed"
    assert len({tuple(b[:, 0]) for b in blocks}) > 1 and (blocks[:, :, 0] != [[0, 1, 2]]).any(axis=1).any()
    with pytest.raises(ValueError, match="same number of units"):
        resample_units(np.random.default_rng(0), 2, 4, [0, 0, 0, 1])
    with pytest.raises(ValueError, match="sorted by group"):
        resample_units(np.random.default_rng(0), 2, 4, [0, 1, 0, 1])


def test_seed_bootstrap_is_reproducible_and_wider_than_images_alone():
    """Seeds that disagree widen the interval: the spread between seeds counts, not only the images'."""
    values = np.concatenate([np.full(100, 0.2), np.full(100, 0.5), np.full(100, 0.8)])
    groups = [0] * 100 + [1] * 100 + [2] * 100
    first = bootstrap_mean_interval(values, groups, resamples=500, seed=3)
    assert bootstrap_mean_interval(values, groups, resamples=500, seed=3) == first
    images_only = bootstrap_mean_interval(values, None, resamples=500, seed=3)
    assert first[1] - first[0] > 3 * (images_only[1] - images_only[0])
    a, b = np.tile([1.0, 0.0], 150), np.zeros(300)
    hierarchical = paired_draw_bootstrap(a, b, 1, 1, resamples=300, seed=5, groups=groups)
    assert hierarchical == paired_draw_bootstrap(a, b, 1, 1, resamples=300, seed=5, groups=groups)


def test_stratified_mcnemar_pools_the_discordant_images_of_every_seed():
    """Per seed (a right only, b right only): (6, 1), (5, 2), (7, 0) -> exact binomial on 18 of 21, by hand."""
    splits = [(6, 1, 13), (5, 2, 13), (7, 0, 13)]
    units, fa, fb = [], [], []
    for seed, (a_only, b_only, both) in enumerate(splits):
        outcome_a = [1.0] * a_only + [0.0] * b_only + [1.0] * both
        outcome_b = [0.0] * a_only + [1.0] * b_only + [1.0] * both
        units += [(seed, i) for i in range(len(outcome_a))]
        fa += outcome_a
        fb += outcome_b
    test = paired(Outcomes(tuple(units), np.array([fa]), 1), Outcomes(tuple(units), np.array([fb]), 1), seed=0)
    assert (test.mcnemar.a_better, test.mcnemar.b_better) == (18, 3)
    assert test.mcnemar.p_value == pytest.approx(binomtest(18, 21, 0.5).pvalue)
    assert test.seed_differences == pytest.approx([5 / 20, 3 / 20, 7 / 20])
    assert test.n == 60 and "20 images x 3 seeds" in test.text()


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
    assert metrics["claims"]["ft_improves_over_ap"] == SUPPORTED
    assert "**3 training seeds** (0, 1, 2)" in summary and "128 images x 3 seeds" in summary
    headline = next(line for line in summary.splitlines() if line.startswith("**Headline"))
    assert "same 128 images x 3 seeds" in headline
    assert metrics["results"] == 27 and metrics["missing"] == 0
    table = (report / "tables" / "defenses.md").read_text()
    assert re.search(r"\d+\.\d ± \d+\.\d \[", table), "each number carries its spread across seeds"
    csv = (report / "tables" / "defenses.csv").read_text()
    assert "eot_pgd (seen)_seed_sd" in csv or "eot_pgd_seed_sd" in csv


def test_a_seed_that_disagrees_keeps_the_claim_from_being_supported(tmp_path):
    metrics, summary, _ = _replicate_report(tmp_path, {0: 3.0, 1: 3.0, 2: -3.0})
    claim = metrics["claims"]["ft_improves_over_ap"]
    assert claim == SPLIT, summary
    assert "The training seeds disagree" in summary and "not every training seed agrees" in summary
    assert "The run supports this:** Fine-tuning" not in summary
