"""Every scoring protocol side by side (src/atop/protocols.py): one table, one figure.

Each randomized defense the config's ``evaluation.protocols`` names, under its attack, scored on
the same images every way: one-shot, resubmission (all draws), while-optimizing (from the
evaluation's own result), deterministic white-box and majority vote (their own jobs, on the
first ``protocols.n_samples`` of those images). Every number is the mean of a per-image outcome
with an image-bootstrap interval (stats.image_bootstrap; its coverage is simulated in
tests/test_calibration.py); the AToP - AP style differences between two defenses are paired on
those images. Only the first training seed has protocol jobs (they are diagnostics of the
scoring, not a claim about training).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..io import read_json
from ..protocols import PROTOCOLS
from ..stats import image_bootstrap
from .estimates import RESAMPLES, Estimate
from .results import defense_order

TITLE = (
    "Scoring protocols: robust accuracy of each randomized defense under one attack, scored the field's "
    "competing ways on the same images (docs/protocols.md)"
)


@dataclass(frozen=True)
class ProtocolOutcomes:
    """Per-image outcomes of one defense, protocol by protocol, on the same images (``indices``)."""

    defense: str
    attack: str
    indices: np.ndarray
    per_image: dict[str, np.ndarray]  # protocol -> (images,) outcomes in [0, 1]
    draws: int
    copies: int | None


def _by_index(result: dict, values) -> dict[int, float]:
    return dict(zip(result["sample_indices"], values, strict=True))


def protocol_outcomes(results: list[dict], protocol_results: list[dict]) -> list[ProtocolOutcomes]:
    """Match each protocol job's result to the evaluation result of the same defense, attack and seed."""
    jobs: dict[tuple, dict[str, dict]] = {}
    for job in protocol_results:
        key = (job["defense"], job["attack"], job.get("seed"))
        jobs.setdefault(key, {})[job["protocol"]["name"]] = job
    evaluations = {(r["defense"], r["attack"], r.get("seed")): r for r in results if not r.get("sweep")}
    found = []
    for key, by_protocol in jobs.items():
        evaluation = evaluations.get(key)
        if evaluation is None:
            raise ValueError(
                f"protocol results for {key[0]} / {key[1]} (seed {key[2]}) have no evaluation result beside them"
            )
        indices = sorted(set.intersection(*(set(job["sample_indices"]) for job in by_protocol.values())))
        fractions = _by_index(evaluation, evaluation["per_sample"]["robust_correct_fraction"])
        missing = [i for i in indices if i not in fractions]
        if missing:
            raise ValueError(
                f"{key[0]} / {key[1]}: the protocol jobs scored images the evaluation did not ({missing[:5]})"
            )
        one_shot = np.array([fractions[i] for i in indices])
        every_draw = (one_shot >= 1.0 - 1e-9).astype(float)
        per_image = {"one_shot": one_shot, "resubmission": every_draw}
        fooled = evaluation.get("fooled_while_optimizing")
        if fooled is not None:
            fooled = _by_index(evaluation, fooled)
            per_image["while_optimizing"] = every_draw * np.array([0.0 if fooled[i] else 1.0 for i in indices])
        for name, job in by_protocol.items():
            values = _by_index(job, job["per_sample"]["robust_correct_fraction"])
            per_image[name] = np.array([values[i] for i in indices])
        copies = by_protocol.get("majority_vote", {}).get("protocol", {}).get("copies")
        found.append(ProtocolOutcomes(key[0], key[1], np.array(indices), per_image, int(evaluation["draws"]), copies))
    order = defense_order([o.defense for o in found])
    return sorted(found, key=lambda o: order.index(o.defense))


def estimate(values: np.ndarray, source: str) -> Estimate:
    interval = image_bootstrap(values[None, None, :], resamples=RESAMPLES)
    return Estimate(float(values.mean()), max(0.0, interval.low), min(1.0, interval.high), source)


def protocol_table(outcomes: list[ProtocolOutcomes]) -> pd.DataFrame:
    """Defenses x protocols (PROTOCOLS' order), Estimate cells; the images and draws each row rests on."""
    cells = []
    for o in outcomes:
        row: dict[str, object] = {}
        for name, protocol in PROTOCOLS.items():
            label = protocol.label
            if name == "resubmission":
                label = f"{protocol.label.split(' (')[0]} (all {o.draws} draws)"
            if name == "majority_vote" and o.copies:
                label = f"{protocol.label} (K = {o.copies})"
            row[label] = estimate(o.per_image[name], f"{o.attack}, {name}") if name in o.per_image else None
        row["images"] = str(len(o.indices))
        row["attack"] = o.attack
        cells.append(row)
    return pd.DataFrame(cells, index=pd.Index([o.defense for o in outcomes], name="defense"))


def ranking_lines(outcomes: list[ProtocolOutcomes]) -> list[str]:
    """Per protocol, the paired difference of each pair of defenses; where the protocols disagree on the
    order (one protocol's interval above zero, another's below), it is said."""
    lines = []
    for i, a in enumerate(outcomes):
        for b in outcomes[i + 1 :]:
            if not np.array_equal(a.indices, b.indices):
                continue
            signs, parts = set(), []
            for name, protocol in PROTOCOLS.items():
                if name not in a.per_image or name not in b.per_image:
                    continue
                interval = image_bootstrap(
                    a.per_image[name][None, None, :], b.per_image[name][None, None, :], resamples=RESAMPLES
                )
                difference = float(a.per_image[name].mean() - b.per_image[name].mean())
                if interval.low > 0:
                    signs.add(1)
                elif interval.high < 0:
                    signs.add(-1)
                parts.append(
                    f"{protocol.label.split(' (')[0]} {100 * difference:+.1f} pp "
                    f"[{100 * interval.low:+.1f}, {100 * interval.high:+.1f}]"
                )
            if not parts:
                continue
            verdict = (
                "the protocols DISAGREE on which is more robust (intervals on both sides of zero)"
                if signs == {1, -1}
                else "no protocol reverses the order"
            )
            lines.append(f"{a.defense} - {b.defense}: {'; '.join(parts)}: {verdict}.")
    return lines


def resubmission_curve(o: ProtocolOutcomes) -> list[Estimate]:
    """N = 1..draws: the chance that N submissions of an image are all right, C(k, N) / C(draws, N) for
    an image right on k of the draws (unbiased for every N; the resubmission table's estimator)."""
    right = np.rint(o.per_image["one_shot"] * o.draws).astype(int)
    return [
        estimate(np.array([math.comb(k, n) / math.comb(o.draws, n) for k in right]), f"{o.attack}, N = {n}")
        for n in range(1, o.draws + 1)
    ]


def load_protocol_results(paths) -> list[dict]:
    return [read_json(path) for path in paths]
