"""metrics.json, the numbers DVC tracks: per-defense accuracies, the claims' verdicts, the headline comparison."""

from __future__ import annotations

import math

import pandas as pd

from .comparisons import METHOD, MODELS, Comparison
from .estimates import DRAW_MEAN, Estimate
from .reference import reference_summary
from .verdicts import SEEDS_CONFIG, doubts, headline


def _rounded(value: float) -> float | None:
    return None if value is None or math.isnan(value) else round(float(value), 4)


def comparison_metrics(comparison: Comparison | None, doubted: bool = False) -> dict:
    """A paired comparison as numbers (fractions) for metrics.json, under both questions; empty without one."""
    if comparison is None or comparison.paired is None:
        return {}
    p = comparison.paired
    models = {
        "question": "these trained models (the run's checkpoints; images are the unit)",
        "all_draws": [round(p.all_draws_a, 4), round(p.all_draws_b, 4)],
        "all_draws_difference": round(p.interval.estimate, 4),
        "all_draws_ci95": [round(p.interval.low, 4), round(p.interval.high, 4)],
        "sign_test_images": [p.model.a_better, p.model.b_better],
        "p_holm": p.model_holm,
        "draw_mean": [round(p.mean_a, 4), round(p.mean_b, 4)],
        "draw_mean_difference": round(p.mean_interval.estimate, 4),
        "draw_mean_ci95": [round(p.mean_interval.low, 4), round(p.mean_interval.high, 4)],
        "draw_mean_p_holm": p.model_mean_holm,
        "outcome": p.outcome(MODELS),
        "draw_mean_outcome": p.outcome(MODELS, DRAW_MEAN),
        "detectable_difference": round(p.detectable, 4),
    }
    if p.method is None:
        method = {
            "question": "the method (training seeds are the unit)",
            "outcome": "undecided",
            "why": f"one training seed; run several, e.g. {SEEDS_CONFIG}",
        }
    else:
        power, needed = p.method_power()
        method = {
            "question": "the method (training seeds are the unit)",
            "seeds": p.method.seeds,
            "images": p.method.images,
            "attacks": list(p.method_attacks),
            "all_draws_difference": round(p.method.mean, 4),
            "all_draws_ci95": [round(p.method.low, 4), round(p.method.high, 4)],
            "per_seed": [round(d, 4) for d in p.method.seed_means],
            "p_holm": p.method_holm,
            "draw_mean_difference": round(p.method_mean.mean, 4),
            "draw_mean_ci95": [round(p.method_mean.low, 4), round(p.method_mean.high, 4)],
            "draw_mean_p_holm": p.method_mean_holm,
            "outcome": p.outcome(METHOD),
            "draw_mean_outcome": p.outcome(METHOD, DRAW_MEAN),
            "power_at_observed": _rounded(power),
            "seeds_for_80_percent_power": needed,
        }
    return {
        "label": comparison.label,
        "images": p.images,
        "seeds": p.seeds,
        "in_doubt": doubted,
        METHOD: method,
        MODELS: models,
    }


def headline_metrics(frame: pd.DataFrame, table: pd.DataFrame, judged, joined, missing, cross_checks=()) -> dict:
    """Numbers DVC tracks: per-defense accuracies (fractions), both questions' claim verdicts, reference and
    missing counts."""

    def key(column: str) -> str:  # "pgd (seen)" -> "pgd", "worst case (seen)" -> "worst_case_seen"
        if column.startswith("worst case"):
            return column.replace(" (", "_").rstrip(")").replace(" ", "_")
        return column.split(" (")[0]

    top = headline(judged, frame)
    doubted, _ = doubts(frame, cross_checks)
    # draw-mean under the column's key, worst case over draws under key_all_draws (NaN-free: unknown is left out)
    defenses = {
        defense: {
            name: round(float(number), 4)
            for col, v in row.items()
            if isinstance(v, Estimate)
            for name, number in ((key(col), v.value), (f"{key(col)}_all_draws", v.all_draws))
            if not math.isnan(number)
        }
        for defense, row in table.iterrows()
    }
    # a worst case picks the strongest attack per seed (and per resample), so its interval is its own
    worst_case_ci95 = {
        defense: {
            key(col): {"low": round(float(v.low), 4), "high": round(float(v.high), 4)}
            for col, v in row.items()
            if isinstance(v, Estimate) and col.startswith("worst case")
        }
        for defense, row in table.iterrows()
    }
    return {
        "defenses": defenses,
        "worst_case_ci95": worst_case_ci95,
        "claims": {claim.key: {level: claim.verdicts[level] for level in (METHOD, MODELS)} for claim in judged},
        "headline": comparison_metrics(top, any(d.covers(top) for d in doubted) if top is not None else False),
        "reference": reference_summary(joined),
        "results": len(frame),
        "missing": len(missing),
    }
