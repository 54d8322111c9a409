"""Every decision rule and interval of the verdicts, checked by seeded simulation before the report uses it.

Nulls include what varies in practice: per-image difficulty, draw noise of randomized defenses,
training-seed variance and image-by-method heterogeneity shared by seeds that score the same
images. A rule passes when its false-alarm rate is at most 5 % and an interval when it covers at
least 95 %, both within Monte Carlo error (2 standard errors at the simulated count). The
rules the report used before (summed discordant pairs over seeds, "every seed agrees",
seeds-then-images and draw bootstraps, the per-image minimum over attacks) are shown failing the
same checks, so these tests can fail.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from atop.stats import (
    clustered_sign_test,
    combine,
    detectable_difference,
    equivalence,
    holm,
    image_bootstrap,
    seed_test,
    sign_test,
    weakest,
)

ALPHA = 0.05


def _tolerance(sims: int, rate: float = ALPHA) -> float:
    return 2 * math.sqrt(rate * (1 - rate) / sims)


def _rates(rng, images: int, low: float = 0.2, high: float = 0.95) -> np.ndarray:
    return rng.uniform(low, high, images)


def _draws(rng, rates, draws: int = 4) -> np.ndarray:
    """Fractions of ``draws`` independent draws right, per entry of ``rates``."""
    return rng.binomial(draws, np.clip(rates, 0, 1)) / draws


# ----------------------------------------------------------------------- these trained models


def test_one_seed_model_level_test_keeps_its_false_alarm_rate():
    """Exchangeable per-image rates, 4 draws, the weakest of 3 attacks chosen per defense: sign test <= 5 %."""
    rng = np.random.default_rng(0)
    sims, rejected = 1000, 0
    for _ in range(sims):
        rates = _rates(rng, 200)
        a = _draws(rng, np.broadcast_to(rates, (1, 3, 200)))
        b = _draws(rng, np.broadcast_to(rates, (1, 3, 200)))
        all_right_a, all_right_b = combine(a >= 1, "weakest"), combine(b >= 1, "weakest")
        rejected += clustered_sign_test(all_right_a, all_right_b).p_value < ALPHA
    assert rejected / sims <= ALPHA + _tolerance(sims)


def test_shared_images_cluster_by_image_and_the_summed_pairs_do_not():
    """3 seeds x 200 shared images, per-image rates exchangeable between defenses (issue 22, finding 1)."""
    rng = np.random.default_rng(1)
    sims, clustered, summed = 600, 0, 0
    for _ in range(sims):
        # each image has its own rate under each defense, drawn from one distribution (exchangeable), and
        # the same under every seed: the seeds score the same images
        rates_a, rates_b = _rates(rng, 200, 0.0, 1.0), _rates(rng, 200, 0.0, 1.0)
        a = rng.random((3, 200)) < rates_a
        b = rng.random((3, 200)) < rates_b
        clustered += clustered_sign_test(a, b).p_value < ALPHA
        summed += sign_test(a.ravel().astype(float), b.ravel().astype(float)).p_value < ALPHA
    assert clustered / sims <= ALPHA + _tolerance(sims)
    assert summed / sims > 0.10, "the stratified McNemar sum should be visibly anti-conservative here"


# ----------------------------------------------------------------------- the method


def _method_null(rng, seeds: int, images: int, seed_sd: float, image_sd: float, effect: float = 0.0):
    """(seeds, images) per-image differences a - b of two training methods whose true mean difference is ``effect``."""
    rates = rng.uniform(0.3, 0.7, images)
    per_image = rng.normal(0, image_sd, images)  # shared by every seed: the same images
    per_seed = rng.normal(0, seed_sd, seeds)  # training variance
    shift = effect + per_seed[:, None] + per_image[None, :]
    a = _draws(rng, rates + shift / 2)
    b = _draws(rng, rates - shift / 2)
    return a - b


@pytest.mark.parametrize(("seeds", "image_sd"), [(2, 0.0), (3, 0.0), (3, 0.3), (5, 0.3)])
def test_method_level_test_keeps_its_false_alarm_rate_under_training_variance(seeds, image_sd):
    rng = np.random.default_rng(10 + seeds)
    sims = 800
    rejected = sum(seed_test(_method_null(rng, seeds, 200, 0.06, image_sd)).p_value < ALPHA for _ in range(sims))
    assert rejected / sims <= ALPHA + _tolerance(sims)


def test_every_seed_agreeing_is_no_test():
    """Per-seed difference sd 6 pp, mean 0, 3 seeds: all agree 25 % of the time; the seed test rejects <= 5 %."""
    rng = np.random.default_rng(3)
    sims, agree, rejected = 800, 0, 0
    for _ in range(sims):
        y = _method_null(rng, 3, 200, 0.06, 0.0)
        signs = np.sign(y.mean(axis=1))
        agree += abs(signs.sum()) == 3
        rejected += seed_test(y).p_value < ALPHA
    assert agree / sims > 0.15
    assert rejected / sims <= ALPHA + _tolerance(sims)


@pytest.mark.parametrize(("seeds", "image_sd"), [(3, 0.0), (3, 0.3), (5, 0.1)])
def test_method_level_interval_covers_the_method_effect(seeds, image_sd):
    rng = np.random.default_rng(20 + seeds)
    sims, effect = 600, 0.04
    covered = 0
    for _ in range(sims):
        test = seed_test(_method_null(rng, seeds, 200, 0.05, image_sd, effect))
        covered += test.low <= effect <= test.high
    assert covered / sims >= 0.95 - _tolerance(sims, 0.95)


def test_a_seeds_then_images_bootstrap_undercovers_where_the_seed_test_does_not():
    """The old hierarchical bootstrap (seeds, then images drawn independently per seed) on shared images."""
    rng = np.random.default_rng(4)
    sims, effect, covered_old = 300, 0.03, 0
    for _ in range(sims):
        y = _method_null(rng, 3, 200, 0.0, 0.3, effect)  # no seed variance: the shared images are what varies
        means = []
        for _ in range(300):
            seeds = rng.integers(0, 3, 3)
            images = rng.integers(0, 200, (3, 200))
            means.append(y[seeds[:, None], images].mean())
        low, high = np.quantile(means, [0.025, 0.975])
        covered_old += low <= effect <= high
    assert covered_old / sims < 0.93


def test_power_projection_matches_simulation():
    """The power the report quotes for S seeds is what S seeds give (within Monte Carlo error)."""
    rng = np.random.default_rng(5)
    pilot = seed_test(_method_null(rng, 400, 200, 0.03, 0.0, 0.03))  # many seeds: accurate variance components
    predicted = pilot.power(0.03, seeds=4)
    sims = 500
    hits = sum(seed_test(_method_null(rng, 4, 200, 0.03, 0.0, 0.03)).p_value < ALPHA for _ in range(sims))
    assert abs(hits / sims - predicted) < 0.06, (hits / sims, predicted)
    needed = pilot.seeds_for_power(0.03)
    assert needed is not None and pilot.power(0.03, seeds=needed) >= 0.8 > pilot.power(0.03, seeds=needed - 1)


# ----------------------------------------------------------------------- the worst case over attacks


@pytest.mark.parametrize("attacks", [2, 3, 4])
def test_weakest_attack_does_not_handicap_a_randomized_defense(attacks):
    """True per-image rate 0.5 under every attack, 4 draws (issue 22, finding 5)."""
    rng = np.random.default_rng(6)
    per_image_min, lowest_mean = [], []
    for _ in range(400):
        fractions = _draws(rng, np.full((1, attacks, 256), 0.5))
        per_image_min.append(fractions.min(axis=1).mean())
        lowest_mean.append(weakest(fractions)[1].mean())
    assert np.mean(per_image_min) < 0.37  # 0.36 / 0.30 / 0.25: the handicap
    assert abs(np.mean(lowest_mean) - 0.5) < 0.02


@pytest.mark.parametrize(
    "means_a, means_b",
    [
        ((0.6, 0.6, 0.6), None),
        ((0.6, 0.6, 0.6, 0.6), None),
        ((0.6, 0.65, 0.7), None),
        ((0.6, 0.6, 0.6), (0.6, 0.6, 0.6)),
        ((0.6, 0.65, 0.7), (0.55, 0.6, 0.6)),
    ],
)
def test_image_bootstrap_covers_the_worst_case_and_contains_its_estimate(means_a, means_b):
    rng = np.random.default_rng(7)

    def sample(means):
        base = rng.uniform(0.25, 0.95, 200)
        return _draws(rng, np.clip(base[None, :] + (np.array(means)[:, None] - 0.6), 0, 1))[None]

    sims, covered = 300, 0
    truth = min(means_a) - (min(means_b) if means_b else 0.0)
    for s in range(sims):
        a = sample(means_a)
        b = sample(means_b) if means_b else None
        interval = image_bootstrap(a, b, resamples=400, seed=s)
        assert interval.contains(interval.estimate)
        covered += interval.contains(truth)
    assert covered / sims >= 0.95 - _tolerance(sims, 0.95)


def test_draw_resampling_on_top_of_images_is_gone():
    """An image-only bootstrap of per-image fractions covers ~95 % (draws resampled on top: ~99 %, finding 4)."""
    rng = np.random.default_rng(8)
    sims, covered, widths = 300, 0, []
    for s in range(sims):
        rates_a = rng.uniform(0.2, 0.9, 200)
        a = _draws(rng, rates_a)[None, None]
        b = _draws(rng, rates_a - 0.03)[None, None]
        interval = image_bootstrap(a, b, resamples=400, seed=s)
        covered += interval.contains(0.03)
        widths.append(interval.high - interval.low)
    assert 0.93 - _tolerance(sims, 0.95) <= covered / sims <= 0.985


def test_clean_all_draws_does_not_fall_with_the_number_of_result_files():
    """Clean outcomes average the replicate files' all-draws indicators: N stays the draws of one file."""
    rng = np.random.default_rng(9)
    rates = rng.uniform(0.6, 1.0, 300)
    estimates = []
    for files in (1, 3, 6):
        fractions = _draws(rng, np.broadcast_to(rates, (1, files, 300)))
        estimates.append(combine(fractions >= 1, "average").mean())
        pooled = (fractions.min(axis=1) >= 1).mean()  # the old rule: right on every draw of every file
    assert max(estimates) - min(estimates) < 0.04, estimates
    assert pooled < estimates[-1] - 0.1


# ----------------------------------------------------------------------- sizes and reproduction


def test_detectable_difference_at_the_holm_level_has_its_power():
    """10 comparisons: at the stated difference the exact test at alpha / 10 has about 80 % power (finding 6)."""
    rng = np.random.default_rng(11)
    n, discordance, family = 256, 0.25, 10
    d_rate = discordance / 2
    differences = np.array([1.0] * int(n * d_rate) + [-1.0] * int(n * d_rate) + [0.0] * (n - int(2 * n * d_rate)))
    stated = detectable_difference(differences, ALPHA / family)
    naive = detectable_difference(differences, ALPHA)
    sims, hits, naive_hits = 600, 0, 0
    for _ in range(sims):
        for delta, counter in ((stated, "h"), (naive, "n")):
            a_only = rng.binomial(n, d_rate + delta / 2)
            b_only = rng.binomial(n - a_only, (d_rate - delta / 2) / (1 - d_rate - delta / 2))
            a = np.r_[np.ones(a_only), np.zeros(b_only), np.zeros(n - a_only - b_only)]
            b = np.r_[np.zeros(a_only), np.ones(b_only), np.zeros(n - a_only - b_only)]
            significant = sign_test(a, b).p_value < ALPHA / family
            if counter == "h":
                hits += significant
            else:
                naive_hits += significant
    assert hits / sims >= 0.8 - 2 * _tolerance(sims, 0.8)
    assert naive_hits / sims < 0.6


def test_holm_keeps_the_family_wise_error():
    rng = np.random.default_rng(12)
    sims = 2000
    false = sum(min(holm(rng.uniform(size=10))) < ALPHA for _ in range(sims))
    assert false / sims <= ALPHA + _tolerance(sims)


def test_equivalence_claims_reproduction_at_most_5_percent_of_the_time_at_the_margin():
    """A run whose true accuracy sits exactly at the margin is called equivalent <= 5 %; fewer images: less often."""
    rng = np.random.default_rng(13)
    margin, reference, sims = 0.05, 0.6, 2000
    calls = {}
    for n in (100, 1000):
        called = 0
        for _ in range(sims):
            value = rng.binomial(n, reference + margin) / n
            half = 1.6449 * math.sqrt(value * (1 - value) / n)
            called += equivalence(value, value - half, value + half, reference, margin).verdict == "equivalent"
        calls[n] = called / sims
        assert calls[n] <= ALPHA + _tolerance(sims)
    close = equivalence(0.61, 0.58, 0.64, reference, margin)
    assert close.verdict == "equivalent"
    assert equivalence(0.61, 0.50, 0.72, reference, margin).verdict == "undecided"  # too few images: no verdict
    assert equivalence(0.80, 0.76, 0.84, reference, margin).verdict == "different"
    with pytest.raises(ValueError, match="margin"):
        equivalence(0.6, 0.5, 0.7, reference, 0.0)


@pytest.mark.parametrize("images", [8, 32, 128])
def test_gap_interval_of_two_proportions_covers(images):
    """The robust generalization gap's interval (Newcombe, continuity-corrected Wilson) covers the true
    difference at least 95 % of the time, on a grid of accuracies, at the diagnostics' sizes."""
    from atop.stats import difference_interval

    rng = np.random.default_rng(images)
    sims = 1000
    for p_train in (0.05, 0.5, 0.8, 1.0):
        for p_test in (0.3, 0.7, 0.95):
            k_train, k_test = rng.binomial(images, p_train, sims), rng.binomial(images, p_test, sims)
            covered = 0
            for a, b in zip(k_train, k_test, strict=True):
                low, high = difference_interval(a / images, images, b / images, images)
                covered += low <= p_train - p_test <= high
            assert covered / sims >= 0.95 - _tolerance(sims, 0.95), (p_train, p_test)


# ----------------------------------------------------------------------- resubmission (N-evaluation)


def _resubmission_outcomes(rng, images: int, draws: int):
    from atop.report.estimates import Outcomes

    rates = rng.beta(2.0, 1.0, images)  # many robust images, a tail of fragile ones
    fractions = _draws(rng, rates, draws)[None, None]
    return Outcomes((0,), ("eot_pgd",), tuple(range(images)), fractions, draws), rates


def test_resubmission_estimate_is_unbiased_for_every_n_and_spans_draw_mean_to_all_draws():
    """C(k, n) / C(D, n) from k of D draws estimates the chance that n fresh draws are all right
    (p^n per image) without bias; n = 1 is the draw-mean, n = D the all-draws metric."""
    from atop.report.estimates import ALL_DRAWS, DRAW_MEAN

    rng = np.random.default_rng(11)
    draws, sims = 8, 400
    errors = {n: [] for n in (1, 2, 4, 8)}
    for _ in range(sims):
        outcomes, rates = _resubmission_outcomes(rng, 200, draws)
        for n, found in errors.items():
            found.append(outcomes.resubmitted(n).mean() - (rates**n).mean())
        assert np.array_equal(outcomes.resubmitted(1), outcomes.metric(DRAW_MEAN))
        assert np.array_equal(outcomes.resubmitted(draws), outcomes.metric(ALL_DRAWS))
        curve = [outcomes.resubmitted(n).mean() for n in range(1, draws + 1)]
        assert all(later <= earlier + 1e-12 for earlier, later in itertools.pairwise(curve))
    for n, values in errors.items():
        values = np.asarray(values)
        assert abs(values.mean()) <= 3 * values.std() / math.sqrt(sims), n
    # a plug-in p_hat^n is biased: at n = 4 it overstates the resubmission accuracy
    outcomes, rates = _resubmission_outcomes(np.random.default_rng(12), 20000, draws)
    plug_in = (outcomes.metric(DRAW_MEAN) ** 4).mean()
    assert plug_in - (rates**4).mean() > 0.01 > abs(outcomes.resubmitted(4).mean() - (rates**4).mean())


def test_resubmission_interval_covers_the_population_accuracy():
    """The image bootstrap on the per-image estimates (resubmission_estimates' interval on one seed)
    covers the population's chance that n resubmissions are all right at least 95 % of the time
    (200 images, 8 draws)."""
    rng = np.random.default_rng(13)
    sims, covered = 300, {2: 0, 8: 0}
    truth = {n: 2.0 / (n + 2.0) for n in covered}  # E[p^n] for p ~ Beta(2, 1)
    for s in range(sims):
        outcomes, _ = _resubmission_outcomes(rng, 200, 8)
        for n in covered:
            interval = image_bootstrap(outcomes.resubmitted(n), resamples=400, seed=s)
            covered[n] += interval.contains(truth[n])
    for n, count in covered.items():
        assert count / sims >= 0.95 - _tolerance(sims, 0.95), n


def test_resubmission_estimates_run_from_one_shot_to_every_draw_and_n_is_checked():
    from atop.report.estimates import Outcomes, resubmission_estimates

    outcomes, _ = _resubmission_outcomes(np.random.default_rng(14), 64, 4)
    estimates = resubmission_estimates(outcomes)
    assert [e.value for e in estimates] == pytest.approx([outcomes.resubmitted(n).mean() for n in range(1, 5)])
    assert all(e.low <= e.value <= e.high for e in estimates)
    fractions = np.array([[[1.0, 0.0, 1.0, 1.0]]])
    outcomes = Outcomes((0,), ("pgd",), (0, 1, 2, 3), fractions, 1)
    assert [e.value for e in resubmission_estimates(outcomes)] == [0.75]
    with pytest.raises(ValueError, match="between 1 and the 1 draws"):
        outcomes.resubmitted(2)
