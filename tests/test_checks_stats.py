"""Paired tests (src/atop/stats.py), obfuscation checks that mean what they say, and per-image worst cases."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import torch
from scipy.stats import binomtest
from test_evaluation_protocol import SPEC, Brightness, graded, prepared
from torch import nn

from atop.checks import (
    cross_attack_checks,
    input_gradients,
    robust_not_above_clean,
    sweep_checks,
    weaker_not_stronger,
    within_budget,
    zero_budget,
)
from atop.defense import DefendedModel
from atop.evaluate import evaluate_defense
from atop.report import write_report
from atop.report.estimates import worst_case
from atop.report.results import load_results
from atop.report.tables import defenses_table
from atop.stats import aligned, holm, image_bootstrap, mcnemar_exact, sign_test, upper_bound_below
from atop.transforms import build_transform

from report_fixtures import make_result, write_results

# --- src/atop/stats.py: hand-computed tables -------------------------------------------------------


def test_sign_test_on_a_hand_computed_table():
    # a higher on 5 images, lower on 1, tied on 2: P(X >= 5 | 6, 1/2) = (6 + 1) / 64
    a = [1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.5, 0.25]
    b = [0.0, 0.0, 0.0, 0.0, 0.5, 1.0, 0.5, 0.25]
    test = sign_test(a, b, alternative="greater")
    assert (test.a_better, test.b_better, test.ties, test.discordant) == (5, 1, 2, 6)
    assert test.p_value == pytest.approx(7 / 64)
    assert sign_test(a, b).p_value == pytest.approx(14 / 64)  # two-sided: both tails
    assert sign_test(a, b, alternative="less").p_value == pytest.approx(63 / 64)
    assert test.mean_difference == pytest.approx((4 + 0.5 - 1) / 8)
    assert sign_test([0.5, 0.5], [0.5, 0.5]).p_value == 1.0  # nothing discordant: no evidence


def test_mcnemar_matches_scipy_and_refuses_fractions():
    # 2 x 2 table: both right 30, only a right 12, only b right 3, both wrong 5
    a = [True] * 30 + [True] * 12 + [False] * 3 + [False] * 5
    b = [True] * 30 + [False] * 12 + [True] * 3 + [False] * 5
    test = mcnemar_exact(a, b)
    assert (test.a_better, test.b_better, test.ties) == (12, 3, 35)
    assert test.p_value == pytest.approx(binomtest(12, 15, 0.5).pvalue)
    assert test.p_value == pytest.approx(2 * sum(math.comb(15, k) for k in range(12, 16)) / 2**15)
    with pytest.raises(ValueError, match="boolean"):
        mcnemar_exact([0.5], [1.0])
    with pytest.raises(ValueError, match="same length"):
        sign_test([1.0, 0.0], [1.0])
    with pytest.raises(ValueError, match="alternative"):
        sign_test([1.0], [0.0], alternative="bigger")


def test_holm_on_a_hand_computed_family():
    # sorted 0.01, 0.02, 0.04, 0.30 -> 4 * 0.01, 3 * 0.02, max(0.06, 2 * 0.04), max(0.08, 0.30)
    assert holm([0.04, 0.01, 0.30, 0.02]) == pytest.approx([0.08, 0.04, 0.30, 0.06])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert holm([]) == []
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        holm([1.5])


def test_paired_image_bootstrap_is_seeded_and_brackets_the_mean():
    a = [[[1.0] * 30 + [0.0] * 10]]
    b = [[[1.0] * 20 + [0.0] * 20]]
    interval = image_bootstrap(a, b, resamples=500, seed=3)
    assert interval.estimate == pytest.approx(0.25) and interval.low < 0.25 < interval.high and interval.low > 0
    assert image_bootstrap(a, b, resamples=500, seed=3) == interval
    same = image_bootstrap(a, a, resamples=50)
    assert (same.estimate, same.low, same.high) == (0.0, 0.0, 0.0)


def test_upper_bound_below_is_the_one_sided_exact_test():
    assert upper_bound_below(0, 64, 0.1)[0]  # 0.9 ** 64 = 0.0012
    assert upper_bound_below(0, 64, 0.1)[1] == pytest.approx(0.9**64)
    assert not upper_bound_below(0, 20, 0.1)[0], "0 of 20 cannot show accuracy < 10 %: 0.9 ** 20 = 0.12"
    assert not upper_bound_below(10, 64, 0.1)[0]


def test_aligned_pairs_by_sample_index():
    common, a, b = aligned([3, 1, 7], [0.1, 0.2, 0.3], [7, 3, 9], [0.9, 0.8, 0.7])
    assert (common, a, b) == ([3, 7], [0.1, 0.3], [0.8, 0.9])


# --- checks that used to pass when they should not --------------------------------------------------


def _result(attack, method, fractions, defense="atop", randomized=True, **extra):
    n = len(fractions)
    return {
        "defense": defense,
        "attack": attack,
        "method": method,
        "norm": "Linf",
        "eps": 0.1,
        "randomized": randomized,
        "robust": {"accuracy": sum(fractions) / n, "n": n, "ci95": [0.0, 1.0]},
        "sample_indices": list(range(n)),
        "per_sample": {"robust_correct_fraction": list(fractions)},
        **extra,
    }


def test_paired_check_sees_a_gap_that_wilson_intervals_hide():
    # FGSM is lower than PGD on 20 of 200 images and equal elsewhere: 0.50 vs 0.60, Wilson intervals overlap
    fgsm = _result("fgsm", "fgsm", [1.0] * 100 + [0.0] * 100)
    pgd = _result("pgd", "pgd_linf", [1.0] * 120 + [0.0] * 80)
    check = weaker_not_stronger(fgsm, pgd, "FGSM never beats PGD")
    assert not check["passed"] and check["p_value"] == pytest.approx(0.5**20)
    assert "0 images higher, 20 lower" in check["detail"]
    assert weaker_not_stronger(pgd, fgsm, "reversed")["passed"]


def test_paired_check_without_per_image_outcomes_fails_instead_of_passing():
    fgsm = _result("fgsm", "fgsm", [1.0] * 10)
    pgd = {**_result("pgd", "pgd_linf", [1.0] * 10), "per_sample": {}}
    check = weaker_not_stronger(fgsm, pgd, "FGSM never beats PGD")
    assert not check["passed"] and "check not run" in check["detail"]


def test_robust_above_clean_is_tested_per_image():
    clean = torch.tensor([0.5] * 100 + [0.0] * 100)
    robust = torch.tensor([0.5] * 100 + [0.25] * 20 + [0.0] * 80)  # higher on 20 images, never lower
    assert not robust_not_above_clean(clean, robust)["passed"]
    assert robust_not_above_clean(robust, clean)["passed"]


def test_randomized_defense_without_a_black_box_attack_fails_the_cross_check():
    white = [_result("fgsm", "fgsm", [1.0] * 60), _result("pgd", "pgd_linf", [1.0] * 40)]
    checks = cross_attack_checks(white)
    missing = [c for c in checks if c["claim"] == "white-box PGD beats black-box Square"]
    assert len(missing) == 1 and not missing[0]["passed"]
    assert missing[0]["detail"] == "not run: no black-box attack on this randomized defense"
    deterministic = [{**r, "defense": "standard", "randomized": False} for r in white]
    assert all(c["passed"] for c in cross_attack_checks(deterministic))
    with_square = [*white, _result("square", "square", [1.0] * 50, white_box=False)]
    assert all(c["passed"] for c in cross_attack_checks(with_square))


def test_nan_or_infinite_perturbation_is_not_nothing_moved():
    same = torch.ones(2, 8, dtype=torch.bool)
    assert zero_budget(same, same, 0.0)["passed"]
    assert not zero_budget(same, same, math.nan)["passed"]
    assert not zero_budget(same, same, math.inf)["passed"]


def test_eps_zero_needs_identical_outcomes_under_identical_draws():
    clean = torch.ones(4, 16, dtype=torch.bool)
    flipped = clean.clone()
    flipped[2, 5] = False  # one (draw, image) outcome: far inside any interval, still a change
    check = zero_budget(clean, flipped, 0.0)
    assert not check["passed"] and check["differing_predictions"] == 1


class HalfDead(nn.Module):
    """Brightness, except the second half of each batch is classified from a constant: no input gradient."""

    def __init__(self):
        super().__init__()
        self.inner = Brightness()

    def forward(self, x):
        live = torch.arange(len(x), device=x.device) < len(x) // 2
        return self.inner(torch.where(live.view(-1, 1, 1, 1), x, torch.full_like(x, 0.7)))


def test_half_the_samples_without_gradient_fails():
    x, y = graded(16)
    normal = input_gradients(DefendedModel(Brightness()).eval(), x, y)
    assert normal["passed"] and normal["zero_gradient_samples"] == 0
    check = input_gradients(DefendedModel(HalfDead()).eval(), x, y)
    assert not check["passed"] and check["zero_gradient_samples"] == 8 and check["nonzero_fraction"] == 0.5


def _sweep_point(eps, fractions):
    return {**_result(f"pgd@{eps}", "pgd_linf", fractions), "sweep": {"name": "eps", "param": "eps", "value": eps}}


def test_large_eps_at_15_percent_fails_and_near_zero_passes():
    start = _sweep_point(0.0, [1.0] * 64)
    stuck = sweep_checks([start, _sweep_point(0.4, [1.0] * 10 + [0.0] * 54)])  # 15.6 %
    broken = sweep_checks([start, _sweep_point(0.4, [0.25] * 4 + [0.0] * 60)])  # 1.6 %: 1 image, rounded up
    reach = next(c for c in stuck if "reaches about 0" in c["claim"])
    assert not reach["passed"] and "exact one-sided binomial test of accuracy >= 0.1" in reach["detail"]
    assert all(c["passed"] for c in broken), broken


def test_perturbation_budget_in_the_attacks_own_norm():
    delta = torch.zeros(3, 3, 4, 4)
    delta[0, 0, 0, 0] = 0.1
    assert within_budget(delta, "Linf", 0.1)["passed"]
    assert not within_budget(delta * 1.01, "Linf", 0.1)["passed"]
    spread = torch.full((2, 3, 4, 4), 0.05)  # L2 norm 0.05 * sqrt(48) = 0.346, Linf 0.05
    assert within_budget(spread, "Linf", 0.05)["passed"] and not within_budget(spread, "L2", 0.3)["passed"]
    assert within_budget(spread, "L2", 0.35)["passed"]
    nan = delta.clone()
    nan[1, 0, 0, 0] = math.nan
    assert not within_budget(nan, "Linf", 0.1)["passed"]
    with pytest.raises(ValueError, match="flow"):
        within_budget(delta, "flow", 0.1)


class PassThrough(nn.Module):
    """A purifier that returns the transformed image: the random transform alone decides the draws."""

    def forward(self, noisy, mask):
        return noisy.clamp(0, 1)


def test_eps_zero_check_scores_under_the_clean_draws_on_a_randomized_defense():
    data = prepared(*graded())
    transform = build_transform("rt2", seed=1, noise_std=0.3, grid=4)
    defense = DefendedModel(Brightness(), PassThrough(), transform).eval()
    result = evaluate_defense(
        defense,
        "atop",
        "pgd",
        {"method": "pgd_linf", "eps": 0.05, "alpha": 0.02, "steps": 3},
        data,
        {**SPEC, "draws": 4},
        seed=0,
    )
    fractions = result["per_sample"]["clean_correct_fraction"]
    assert any(0 < f < 1 for f in fractions), "draws must disagree, or the test proves nothing"
    zero = result["checks"]["zero_budget"]
    assert zero["passed"] and zero["differing_predictions"] == 0, zero
    assert result["checks"]["within_budget"]["passed"]


# --- report: per-image worst case, EOT, checks wording ---------------------------------------------


def _disjoint_attacks(n=100, second=0.6):
    """Two attacks that each break a different 40 % of the images (the second: less when ``second`` < 0.6)."""
    a = [0.0] * 40 + [1.0] * 60
    b = [1.0] * 40 + [0.0] * round(n * (1 - second)) + [1.0] * (60 - round(n * (1 - second)))
    results = []
    for attack, fractions, eot in (("eot_pgd", a, 20), ("pgd", b, 1)):
        result = make_result("atop", attack, float(np.mean(fractions)), n=n, eot=eot)
        result["method"] = "pgd_linf" if attack == "pgd" else attack
        result["per_sample"]["robust_correct_fraction"] = fractions
        results.append(result)
    return results


def test_worst_case_is_the_strongest_attack(tmp_path):
    write_results(tmp_path, _disjoint_attacks(second=0.5))
    frame, _ = load_results([tmp_path])
    cell = defenses_table(frame).loc["atop", "worst case"]
    assert cell.value == pytest.approx(0.5), "the lowest of the per-attack accuracies (pgd: 0.5, eot_pgd: 0.6)"
    assert cell.low <= 0.5 <= cell.high and cell.high - cell.low < 0.25
    assert cell.basis == "lowest of the per-attack accuracies over 2 attacks (pgd) on 100 images"


def test_worst_case_over_differing_sample_indices_uses_the_common_images(tmp_path):
    results = _disjoint_attacks()
    results[1]["sample_indices"] = list(range(50, 150))  # b's image k is index 50 + k
    write_results(tmp_path, results)
    frame, _ = load_results([tmp_path])
    cell = worst_case(frame)
    # common indices 50..99: a is right on all of them; b (its images 0..49) is wrong on 40..49
    assert cell.value == pytest.approx(40 / 50) and "50 images (common to all; up to 100 scored)" in cell.basis
    results[1]["sample_indices"] = list(range(200, 300))
    write_results(tmp_path, results)
    frame, _ = load_results([tmp_path])
    cell = worst_case(frame)
    assert cell.value == pytest.approx(0.6) and "no image scored by every attack" in cell.basis


def test_report_shows_per_image_worst_case_eot_and_no_false_all_clear(tmp_path):
    write_results(tmp_path, _disjoint_attacks())
    checks = tmp_path / "checks.json"
    failed = {"defense": "atop", "claim": "white-box PGD beats black-box Square", "passed": False, "detail": "x"}
    checks.write_text(json.dumps({"cross_attack": [failed], "sweeps": []}))
    metrics = write_report([tmp_path / "eval"], tmp_path / "report", "x", "digits", checks_paths=[checks])
    interval = metrics["worst_case_ci95"]["atop"]["worst_case"]
    assert metrics["defenses"]["atop"]["worst_case"] == pytest.approx(0.6) and interval["low"] < 0.6 < interval["high"]
    summary = (tmp_path / "report" / "summary.md").read_text()
    assert "No failed check" not in summary and "FAILED for atop: white-box PGD beats black-box Square" in summary
    assert "EOT-averaged attacks" in summary and "eot_pgd: EOT 20 (atop)" in summary
    document = (tmp_path / "report" / "robustness.md").read_text()
    assert "## Attacks: threat model and EOT" in document
    assert re.search(r"\| eot_pgd +\| eot_pgd +\|.*\| 20 \(atop\) +\|", document)
    assert re.search(r"\| pgd +\| pgd_linf +\|.*\| 1 \(atop\) +\|", document)


def test_worst_case_of_older_results_without_per_image_outcomes_says_so(tmp_path):
    results = _disjoint_attacks()
    for result in results:
        del result["per_sample"], result["sample_indices"]
    write_results(tmp_path, results)
    frame, _ = load_results([tmp_path])
    cell = worst_case(frame)
    assert cell.value == pytest.approx(0.6) and cell.basis.endswith("(no per-image outcomes: its own interval)")


def test_a_failed_eot_sufficiency_check_puts_that_result_in_doubt_first(tmp_path):
    """diagnostics/eot_checks.json beside obfuscation_checks.json: the summary opens on the doubted number."""
    write_results(tmp_path, _disjoint_attacks())
    obfuscation, eot = tmp_path / "checks.json", tmp_path / "eot_checks.json"
    obfuscation.write_text(json.dumps({"cross_attack": [], "sweeps": []}))
    record = {
        "defense": "atop",
        "attack": "eot_pgd",
        "claim": "EOT samples suffice for the defense's gradient spread",
        "passed": False,
        "detail": "eot_pgd uses EOT 20; k = 40 draws reach expected cosine 0.9: EOT TOO SMALL",
    }
    eot.write_text(json.dumps({"checks": [record], "passed": False}))
    metrics = write_report([tmp_path / "eval"], tmp_path / "report", "x", "digits", checks_paths=[obfuscation, eot])
    summary = (tmp_path / "report" / "summary.md").read_text()
    opening = summary.split("\n\n")[:4]
    assert any("robust accuracy of atop / eot_pgd (EOT samples suffice" in part for part in opening), opening
    assert "No failed check" not in summary
    assert metrics["obfuscation_checks_failed"] >= 1
