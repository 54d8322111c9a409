"""Paired verdicts: the statistics behind them (hand-computed and scipy) and the summary's wording."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import binomtest, norm

from atop.report import write_report
from atop.report.results import load_results, missing_results
from atop.report.summary import CANNOT, NOISE, SUPPORTED, Comparison, judge, paired, with_holm
from atop.report.tables import Estimate, Outcomes, defenses_table, table_csv, table_markdown
from atop.stats import all_draws_right, detectable_difference, paired_bootstrap, paired_draw_bootstrap

from report_fixtures import digits_like_results, make_result, write_results

REPO = Path(__file__).resolve().parents[1]

# --- statistics ------------------------------------------------------------------------------------


def test_detectable_difference_by_hand():
    # 24 discordant of 128: (1.95996 + 0.84162) * sqrt(24 / 128 / 128) = 2.80158 * 0.038273
    assert detectable_difference(24, 128) == pytest.approx(0.10723, abs=1e-4)
    assert detectable_difference(24, 128) == pytest.approx((norm.ppf(0.975) + norm.ppf(0.8)) * math.sqrt(24) / 128)
    # nothing discordant: still 6 images in one direction are needed (2 * 0.5 ** 6 < 0.05 < 2 * 0.5 ** 5)
    assert detectable_difference(0, 128) == pytest.approx(6 / 128)
    with pytest.raises(ValueError, match="discordant"):
        detectable_difference(200, 128)


def test_all_draws_right_takes_the_worst_attack_and_draw():
    fractions = [[1.0, 1.0, 0.75, 0.0], [1.0, 0.5, 1.0, 0.0]]
    assert all_draws_right(fractions).tolist() == [True, False, False, False]


def test_draw_bootstrap_is_seeded():
    rng = np.random.default_rng(1)
    a, b = rng.integers(0, 5, 80) / 4, rng.integers(0, 5, 80) / 4
    first = paired_draw_bootstrap(a, b, 4, 4, resamples=300, seed=7)
    assert paired_draw_bootstrap(a, b, 4, 4, resamples=300, seed=7) == first
    assert paired_draw_bootstrap(a, b, 4, 4, resamples=300, seed=8) != first
    assert first.low < first.difference < first.high and first.difference == pytest.approx((a - b).mean())


def test_draw_bootstrap_reduces_to_the_image_bootstrap_on_one_draw():
    """A deterministic defense (one draw, 0/1 outcomes) has no draw noise: same resampled images, same interval."""
    a = [1.0] * 30 + [0.0] * 10
    b = [1.0] * 20 + [0.0] * 20
    draws = paired_draw_bootstrap(a, b, 1, 1, resamples=500, seed=3)
    assert (draws.difference, draws.low, draws.high) == paired_bootstrap(a, b, resamples=500, seed=3)


def test_draw_bootstrap_resamples_the_draws_within_an_image():
    """Every image right on 2 of 4 draws for both defenses: images alone say 0 +- 0, the draws do not.

    Per image the resampled difference has variance 2 * (0.5 * 0.5 / 4) = 0.125, so the mean over
    100 images has standard deviation sqrt(0.125 / 100) = 0.0354: a 95 % interval of about +- 0.069.
    """
    half = [0.5] * 100
    assert paired_bootstrap(half, half, resamples=200)[1:] == (0.0, 0.0)
    test = paired_draw_bootstrap(half, half, 4, 4, resamples=4000, seed=0)
    assert test.difference == 0.0 and test.high - test.low == pytest.approx(2 * 1.96 * 0.0354, rel=0.1)
    assert test.p_value == 1.0


def test_draw_bootstrap_takes_the_worst_attack_per_image():
    a = np.array([[1.0, 0.0, 1.0, 1.0], [0.0, 1.0, 1.0, 1.0]])  # each attack breaks a different image
    b = np.array([1.0, 1.0, 0.0, 0.0])
    test = paired_draw_bootstrap(a, b, 1, 1, resamples=200, seed=0)
    assert test.difference == pytest.approx((2 - 2) / 4)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        paired_draw_bootstrap([1.5], [0.0], 4, 4)


def test_paired_comparison_matches_scipy():
    # all-draws-right: both 50, only a 14, only b 4, neither 60 (a's other images right on some draws only)
    a = [1.0] * 50 + [1.0] * 14 + [0.75] * 4 + [0.25] * 60
    b = [1.0] * 50 + [0.5] * 14 + [1.0] * 4 + [0.0] * 60
    outcome = paired(Outcomes(tuple(range(128)), np.array([a]), 4), Outcomes(tuple(range(128)), np.array([b]), 4))
    assert (outcome.mcnemar.a_better, outcome.mcnemar.b_better, outcome.n) == (14, 4, 128)
    assert outcome.mcnemar.p_value == pytest.approx(binomtest(14, 18, 0.5).pvalue)
    assert outcome.mcnemar.p_value == pytest.approx(2 * sum(math.comb(18, k) for k in range(14, 19)) / 2**18)
    assert outcome.strict_a == pytest.approx(64 / 128) and outcome.strict_b == pytest.approx(54 / 128)
    assert outcome.detectable == pytest.approx(detectable_difference(18, 128))


def _comparison(label, a_better, b_better, n=200):
    """A comparison whose all-draws-right table has the given discordant counts (draws deterministic)."""
    a = [1.0] * a_better + [0.0] * b_better + [1.0] * (n - a_better - b_better)
    b = [0.0] * a_better + [1.0] * b_better + [1.0] * (n - a_better - b_better)
    test = paired(Outcomes(tuple(range(n)), np.array([a]), 1), Outcomes(tuple(range(n)), np.array([b]), 1), 0)
    estimate = Estimate(0.5, 0.4, 0.6)
    return Comparison(label, estimate, estimate, test, ("x", "y"), ("pgd",))


def test_holm_runs_over_the_report_in_p_value_order():
    # raw exact McNemar p: 9:0 -> 2 / 2**9 = 0.0039; 7:0 -> 2 / 2**7 = 0.0156; 5:0 -> 2 / 2**5 = 0.0625
    family = with_holm([_comparison("mid", 7, 0), _comparison("large", 5, 0), _comparison("small", 9, 0)])
    adjusted = [c.paired.mcnemar_holm for c in family]
    assert adjusted == pytest.approx([max(3 * 2 / 2**9, 2 * 2 / 2**7), max(2 * 2 / 2**7, 2 / 2**5), 3 * 2 / 2**9])
    # 7:0 alone is significant (0.0156); after Holm over three comparisons it is 0.031, still below 5 %
    assert [c.outcome for c in family] == ["higher", "none", "higher"]
    # 6:0 alone: p = 0.031 -> supported; three such comparisons: Holm makes each 3 * 0.031 = 0.094
    alone = with_holm([_comparison("six", 6, 0)])
    assert judge("k", "s", alone, "why").verdict == SUPPORTED
    crowded = with_holm([_comparison("six", 6, 0), _comparison("other", 6, 0), _comparison("third", 6, 0)])
    assert [c.paired.mcnemar_holm for c in crowded] == pytest.approx([3 * 2 / 2**6] * 3)
    claim = judge("k", "s", crowded, "why")
    assert claim.verdict == NOISE and "the run could detect differences of" in claim.evidence
    assert judge("k", "s", [], "nothing").verdict == CANNOT


def test_draw_mean_disagreement_is_stated():
    """Every image right on 3 of 4 draws vs 2 of 4: nothing is right on every draw, but the draw-means differ."""
    n = 200
    a, b = Outcomes(tuple(range(n)), np.full((1, n), 0.75), 4), Outcomes(tuple(range(n)), np.full((1, n), 0.5), 4)
    estimate = Estimate(0.5, 0.4, 0.6)
    family = with_holm([Comparison("atop vs ap", estimate, estimate, paired(a, b, 0), ("atop", "ap"), ("pgd",))])
    claim = judge("k", "s", family, "why")
    assert claim.verdict == NOISE and "the draw-mean DISAGREES in 1 of 1" in claim.metric
    assert "the draw-mean disagrees: higher" in claim.evidence


# --- the report ------------------------------------------------------------------------------------


def _digits_report(tmp_path, **kwargs):
    write_results(tmp_path, digits_like_results())
    metrics = write_report(
        [tmp_path / "eval"], tmp_path / "report", "digits", "digits", purifier="gan_unet", transform="rt2", **kwargs
    )
    return metrics, (tmp_path / "report" / "summary.md").read_text()


def test_headline_gets_a_paired_verdict(tmp_path):
    metrics, summary = _digits_report(tmp_path)
    headline = next(line for line in summary.splitlines() if line.startswith("**Headline, AToP vs AP:**"))
    for words in ("95 % interval", "paired bootstrap over images and draws", "exact McNemar", "Holm-adjusted p"):
        assert words in headline
    numbers = metrics["headline"]
    assert numbers["label"].startswith("atop vs ap") and numbers["n"] == 128
    low, high = numbers["draw_mean_ci95"]
    assert low < numbers["draw_mean_difference"] < high
    claim = metrics["claims"]["ft_improves_over_ap"]
    if numbers["outcome"] == "none":  # the headline and the claim line say the same thing
        assert "could detect differences of" in headline and claim == NOISE
        assert f"{100 * numbers['detectable_difference']:.1f} pp or more" in headline
    else:
        assert "AToP is more robust" in headline and claim == SUPPORTED
    assert "Intervals overlap" not in summary and "within noise" not in summary


def test_failed_check_is_named_first_as_an_upper_bound(tmp_path):
    results = digits_like_results()
    for result in results:
        if (result["defense"], result["attack"]) == ("atop", "pgd"):
            result["checks"] = {"zero_budget": {"passed": False, "detail": "moved"}, "within_budget": {"passed": True}}
    write_results(tmp_path, results)
    write_report([tmp_path / "eval"], tmp_path / "report", "digits", "digits", purifier="gan_unet", transform="rt2")
    summary = (tmp_path / "report" / "summary.md").read_text()
    first = summary.split("\n\n")[1]  # the paragraph under the title
    assert first.startswith("**1 failed check puts numbers in doubt: read these as upper bounds**")
    assert "robust accuracy of atop / pgd" in first and "(zero_budget)" in first
    claim = next(line for line in summary.splitlines() if "makes the defense more robust than purification" in line)
    following = summary.splitlines()[summary.splitlines().index(claim) + 1]
    assert "Rests on numbers a failed check puts in doubt (zero_budget): upper bounds." in following
    assert "No failed check" not in summary and "FAILED for atop / pgd: zero_budget" in summary


def test_missing_lists_only_expected_results(tmp_path):
    """An attack restricted to some defenses (bpda_eot on ap/atop only) is not missing for the others."""
    results = [
        make_result("standard", "pgd", 0.0),
        make_result("atop", "pgd", 0.6),
        make_result("atop", "bpda_eot", 0.8, method="bpda_eot"),
    ]
    paths = write_results(tmp_path, results)
    frame, _ = load_results([tmp_path / "eval"])
    assert missing_results(frame, paths) == []
    absent = tmp_path / "eval" / "ap" / "bpda_eot.json"
    assert missing_results(frame, [*paths, absent]) == [f"{absent} (expected, not found)"]
    # a hand-run report without --expected can only guess, and says a gap may be by design
    assert missing_results(frame, []) == [
        "standard / bpda_eot (no result; not run, or excluded by the attack's defenses: selection)"
    ]


def test_tables_show_both_robust_metrics(tmp_path):
    write_results(tmp_path, digits_like_results())
    frame, _ = load_results([tmp_path / "eval"])
    table = defenses_table(frame)
    cell = table.loc["atop", "worst case"]
    assert 0 < cell.strict < cell.value, "a randomized defense: fewer images survive every draw than one"
    assert table.loc["standard", "pgd"].strict == table.loc["standard", "pgd"].value  # deterministic
    csv = table_csv(table)
    assert csv.loc["atop", "worst case_all_draws"] == pytest.approx(round(100 * cell.strict, 2))
    assert "all draws" in table_markdown(table)
    metrics, _ = _digits_report(tmp_path / "r")
    assert metrics["defenses"]["atop"]["worst_case_all_draws"] < metrics["defenses"]["atop"]["worst_case"]
    json.dumps(metrics, allow_nan=False)  # DVC reads it: no NaN


# --- Snakemake's HTML report opens on the verdicts --------------------------------------------------


def _render_workflow_page(files, cwd, monkeypatch) -> str:
    """report/workflow.rst rendered the way `snakemake --report` renders it (Jinja, then docutils)."""
    from types import SimpleNamespace

    import snakemake.report  # noqa: F401  registers the embeddedimage directive
    from docutils.core import publish_parts
    from jinja2 import Environment

    monkeypatch.chdir(cwd)
    template = (REPO / "report" / "workflow.rst").read_text()
    text = (
        Environment(trim_blocks=True, lstrip_blocks=True)
        .from_string(template)
        .render(
            snakemake=SimpleNamespace(config={"experiment": "digits", "data": {"dataset": "digits"}}),
            categories={},
            files=files,
        )
    )
    return publish_parts(text, writer_name="html")["html_body"]


def test_html_report_opens_on_the_verdicts_then_the_figure_then_the_config(tmp_path, monkeypatch):
    from types import SimpleNamespace

    _digits_report(tmp_path)
    report = Path("report")
    files = [SimpleNamespace(name=n, path=report / n) for n in ("robust_accuracy.png", "summary.rst")]
    page = _render_workflow_page(files, tmp_path, monkeypatch)
    headline, claims, figure = (
        page.index("Headline, AToP vs AP"),
        page.index("The paper's claims"),
        page.index('src="data:image/png;base64,iVBOR'),
    )
    assert headline < claims < figure < page.index("Configuration") < page.index("&quot;experiment&quot;")
    assert "System Message" not in page and "eot_pgd" in page, "the summary must be valid reStructuredText"
    empty = _render_workflow_page([], tmp_path, monkeypatch)
    assert "No verdicts yet" in empty and "data:image" not in empty
