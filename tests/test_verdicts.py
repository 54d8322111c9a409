"""Paired verdicts: the statistics behind them (hand-computed and scipy) and the summary's wording."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import binomtest, norm

from atop.claims import ClaimSpec
from atop.report import write_report
from atop.report.comparisons import METHOD, MODELS, Comparison, paired, with_holm
from atop.report.estimates import Estimate, Outcomes
from atop.report.results import load_results, missing_results
from atop.report.tables import defenses_table, table_csv, table_markdown
from atop.report.verdicts import CANNOT, NOISE, PARTLY, SUPPORTED, UNDECIDED, judge, universal
from atop.stats import all_draws_right, detectable_difference, image_bootstrap

from report_fixtures import digits_like_results, make_result, write_results

REPO = Path(__file__).resolve().parents[1]


def outcomes(fractions, draws: int = 1) -> Outcomes:
    """One seed, one attack: per-image fractions of ``draws`` draws right."""
    fractions = np.asarray(fractions, dtype=float)
    return Outcomes((None,), ("pgd",), tuple(range(fractions.size)), fractions[None, None, :], draws)


# --- statistics ------------------------------------------------------------------------------------


def test_detectable_difference_by_hand():
    # 24 discordant of 128 (12 each way): (1.95996 + 0.84162) * sqrt(24 / 128 / 128) = 2.80158 * 0.038273
    differences = [1.0] * 12 + [-1.0] * 12 + [0.0] * 104
    assert detectable_difference(differences) == pytest.approx(0.10723, abs=1e-4)
    assert detectable_difference(differences) == pytest.approx((norm.ppf(0.975) + norm.ppf(0.8)) * math.sqrt(24) / 128)
    # at the Holm family's level (10 comparisons) a larger difference is needed
    holm_level = (norm.ppf(1 - 0.005 / 2) + norm.ppf(0.8)) * math.sqrt(24) / 128
    assert detectable_difference(differences, 0.005) == pytest.approx(holm_level)
    # nothing discordant: still 6 images in one direction are needed (2 * 0.5 ** 6 < 0.05 < 2 * 0.5 ** 5)
    assert detectable_difference([0.0] * 128) == pytest.approx(6 / 128)
    with pytest.raises(ValueError, match="finite per-image differences"):
        detectable_difference([math.nan, 0.0])


def test_all_draws_right_is_per_attack_and_per_image():
    fractions = [[1.0, 1.0, 0.75, 0.0], [1.0, 0.5, 1.0, 0.0]]
    assert all_draws_right(fractions).tolist() == [[True, True, False, False], [True, False, True, False]]


def test_image_bootstrap_is_seeded_and_contains_its_estimate():
    rng = np.random.default_rng(1)
    a, b = rng.integers(0, 5, (1, 2, 80)) / 4, rng.integers(0, 5, (1, 1, 80)) / 4
    first = image_bootstrap(a, b, resamples=300, seed=7)
    assert image_bootstrap(a, b, resamples=300, seed=7) == first
    assert image_bootstrap(a, b, resamples=300, seed=8) != first
    assert first.low < first.estimate < first.high
    assert first.estimate == pytest.approx(a.mean(axis=2).min() - b.mean())
    with pytest.raises(ValueError, match="same seeds and images"):
        image_bootstrap(a, rng.random((1, 1, 79)))


def test_image_bootstrap_never_resamples_draws():
    """Every image right on 2 of 4 draws for both defenses: images alone say 0 +- 0 (draw noise is already in)."""
    half = np.full((1, 1, 100), 0.5)
    interval = image_bootstrap(half, half, resamples=200)
    assert (interval.estimate, interval.low, interval.high) == (0.0, 0.0, 0.0)


def test_paired_comparison_matches_scipy():
    # all-draws-right: both 50, only a 14, only b 4, neither 60 (a's other images right on some draws only)
    a = [1.0] * 50 + [1.0] * 14 + [0.75] * 4 + [0.25] * 60
    b = [1.0] * 50 + [0.5] * 14 + [1.0] * 4 + [0.0] * 60
    outcome = paired(outcomes(a, 4), outcomes(b, 4))
    assert (outcome.model.a_better, outcome.model.b_better, outcome.n) == (14, 4, 128)
    assert outcome.model.p_value == pytest.approx(binomtest(14, 18, 0.5).pvalue)
    assert outcome.model.p_value == pytest.approx(2 * sum(math.comb(18, k) for k in range(14, 19)) / 2**18)
    assert outcome.all_draws_a == pytest.approx(64 / 128) and outcome.all_draws_b == pytest.approx(54 / 128)
    assert outcome.detectable == pytest.approx((norm.ppf(0.975) + norm.ppf(0.8)) * math.sqrt(18) / 128)
    assert outcome.method is None and outcome.outcome(METHOD) == "undecided", "one seed: the method is undecided"


def _comparison(label, a_better, b_better, n=200):
    """A comparison whose all-draws-right table has the given discordant counts (draws deterministic)."""
    a = [1.0] * a_better + [0.0] * b_better + [1.0] * (n - a_better - b_better)
    b = [0.0] * a_better + [1.0] * b_better + [1.0] * (n - a_better - b_better)
    estimate = Estimate(0.5, 0.4, 0.6)
    return Comparison(label, estimate, estimate, paired(outcomes(a), outcomes(b)), ("x", "y"), ("pgd",))


def test_holm_runs_over_the_report_in_p_value_order():
    # raw exact McNemar p: 9:0 -> 2 / 2**9 = 0.0039; 7:0 -> 2 / 2**7 = 0.0156; 5:0 -> 2 / 2**5 = 0.0625
    family = with_holm([_comparison("mid", 7, 0), _comparison("large", 5, 0), _comparison("small", 9, 0)])
    adjusted = [c.paired.model_holm for c in family]
    assert adjusted == pytest.approx([max(3 * 2 / 2**9, 2 * 2 / 2**7), max(2 * 2 / 2**7, 2 / 2**5), 3 * 2 / 2**9])
    # 7:0 alone is significant (0.0156); after Holm over three comparisons it is 0.031, still below 5 %
    assert [c.outcome(MODELS) for c in family] == ["higher", "none", "higher"]
    assert all(c.paired.family == 3 for c in family)
    # 6:0 alone: p = 0.031 -> supported; three such comparisons: Holm makes each 3 * 0.031 = 0.094
    alone = with_holm([_comparison("six", 6, 0)])
    assert judge("k", "s", alone, "why").verdicts[MODELS] == SUPPORTED
    crowded = with_holm([_comparison("six", 6, 0), _comparison("other", 6, 0), _comparison("third", 6, 0)])
    assert [c.paired.model_holm for c in crowded] == pytest.approx([3 * 2 / 2**6] * 3)
    claim = judge("k", "s", crowded, "why")
    assert claim.verdicts[MODELS] == NOISE and "the run could detect differences of" in claim.evidence[MODELS]
    assert claim.verdicts[METHOD] == UNDECIDED and "one training seed" in claim.evidence[METHOD]
    assert judge("k", "s", [], "nothing").verdicts == {METHOD: CANNOT, MODELS: CANNOT}


def test_a_universal_claim_needs_every_comparison():
    """RT2 beats RT1 20:2 and ties RT3 3:4: partly supported, 1 of 2, not "supported" (issue 22, finding 8)."""
    family = with_holm([_comparison("rt2 vs rt1", 20, 2), _comparison("rt2 vs rt3", 3, 4)])
    claim = judge("rt2_best", "RT2 is best", family, "why")
    assert claim.verdicts[MODELS] == PARTLY and "partly supported, 1 of 2" in claim.evidence[MODELS]
    assert universal(["higher", "higher"])[0] == SUPPORTED
    assert universal(["higher", "none", "lower"])[0] == "mixed"


def test_draw_mean_disagreement_is_stated():
    """Every image right on 3 of 4 draws vs 2 of 4: nothing is right on every draw, but the draw-means differ."""
    n = 200
    a, b = outcomes(np.full(n, 0.75), 4), outcomes(np.full(n, 0.5), 4)
    estimate = Estimate(0.5, 0.4, 0.6)
    family = with_holm([Comparison("atop vs ap", estimate, estimate, paired(a, b, 0), ("atop", "ap"), ("pgd",))])
    claim = judge("k", "s", family, "why")
    assert claim.verdicts[MODELS] == NOISE and "the draw-mean DISAGREES in 1 of 1" in claim.metric
    assert "the draw-mean disagrees: higher" in claim.evidence[MODELS]


# --- the report ------------------------------------------------------------------------------------


def _digits_report(tmp_path, **kwargs):
    write_results(tmp_path, digits_like_results())
    metrics = write_report(
        [tmp_path / "eval"], tmp_path / "report", "digits", "digits", purifier="gan_unet", transform="rt2", **kwargs
    )
    return metrics, (tmp_path / "report" / "summary.md").read_text()


def test_headline_asks_both_questions(tmp_path):
    metrics, summary = _digits_report(tmp_path)
    lines = summary.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("**Headline, AToP vs AP**"))
    models, method = lines[at + 2], lines[at + 3]  # one seed: these models lead (verdicts.decide_on: auto)
    assert models.startswith("- *These trained models*") and models.endswith("*(leads the verdict)*")
    assert method.startswith("- *The method*") and "**undecided**: one training seed" in method
    assert "config/digits-seeds.yaml" in method
    for words in ("sign test", "Holm p", "draw-mean"):
        assert words in models
    numbers = metrics["headline"]
    assert numbers["label"].startswith("atop vs ap") and numbers["images"] == 128 and numbers["seeds"] == 1
    assert numbers["method"]["outcome"] == "undecided"
    low, high = numbers["these_models"]["draw_mean_ci95"]
    assert low <= numbers["these_models"]["draw_mean_difference"] <= high
    claim = metrics["claims"]["ft_improves_over_ap"]
    assert claim["method"] == UNDECIDED
    if numbers["these_models"]["outcome"] == "none":  # the headline and the claim line say the same thing
        assert "could detect" in models and claim["these_models"] == NOISE
        assert f"{100 * numbers['these_models']['detectable_difference']:.1f} pp or more" in models
    else:
        assert "AToP model is more robust" in models and claim["these_models"] == SUPPORTED
    assert "Intervals overlap" not in summary and "within noise" not in summary


def test_missing_or_null_checks_are_doubt_and_the_headline_says_so(tmp_path):
    """A result whose checks did not run or recorded no outcome is not a pass (issue 22, finding 10)."""
    results = digits_like_results()
    for result in results:
        if (result["defense"], result["attack"]) == ("atop", "eot_pgd"):
            result["checks"] = {"zero_budget": {"passed": None}}
        if (result["defense"], result["attack"]) == ("ap", "pgd"):
            result.pop("checks", None)
    write_results(tmp_path, results)
    metrics = write_report(
        [tmp_path / "eval"], tmp_path / "report", "digits", "digits", purifier="gan_unet", transform="rt2"
    )
    summary = (tmp_path / "report" / "summary.md").read_text()
    assert "no outcome recorded: zero_budget" in summary and "no checks recorded" in summary
    headline = next(line for line in summary.splitlines() if line.startswith("**Headline"))
    assert "**IN DOUBT**" in headline and metrics["headline"]["in_doubt"] is True
    assert metrics["obfuscation_checks_without_outcome"] >= 2
    assert "No failed check" not in summary


def test_failed_check_is_named_first_as_an_upper_bound(tmp_path):
    results = digits_like_results()
    for result in results:
        if (result["defense"], result["attack"]) == ("atop", "pgd"):
            result["checks"] = {"zero_budget": {"passed": False, "detail": "moved"}, "within_budget": {"passed": True}}
    write_results(tmp_path, results)
    write_report([tmp_path / "eval"], tmp_path / "report", "digits", "digits", purifier="gan_unet", transform="rt2")
    summary = (tmp_path / "report" / "summary.md").read_text()
    first = summary.split("\n\n")[1]  # the paragraph under the title
    assert first.startswith("**1 check failed or missing puts numbers in doubt: read these as upper bounds**")
    assert "robust accuracy of atop / pgd" in first and "(zero_budget)" in first
    claim = next(line for line in summary.splitlines() if "makes the defense more robust than purification" in line)
    following = summary.splitlines()[summary.splitlines().index(claim) + 1]
    assert "Rests on numbers a failed or missing check puts in doubt (zero_budget): upper bounds." in following
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
    assert 0 < cell.all_draws < cell.value, "a randomized defense: fewer images survive every draw than one"
    assert table.loc["standard", "pgd"].all_draws == table.loc["standard", "pgd"].value  # deterministic
    csv = table_csv(table)
    assert csv.loc["atop", "worst case_all_draws"] == pytest.approx(round(100 * cell.all_draws, 2))
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


def test_an_equivalence_margin_out_of_range_is_refused_before_any_output(tmp_path):
    write_results(tmp_path, digits_like_results())
    with pytest.raises(ValueError, match=r"verdicts.equivalence_margin = 0.7 must lie in \(0, 0.5\]"):
        write_report([tmp_path / "eval"], tmp_path / "report", "d", "digits", verdicts={"equivalence_margin": 0.7})
    assert not (tmp_path / "report").exists()


def test_a_claim_selects_defenses_by_registered_kinds_only():
    with pytest.raises(ValueError, match="'atp' is not a defense kind"):
        ClaimSpec("typo", "AToP beats AP.", a={"kind": "atp"}, b={"kind": "ap"})
    with pytest.raises(ValueError, match="'ae' is not a defense kind"):
        ClaimSpec("typo", "GAN beats AE.", a={"kind": ("ap", "ae")})
