"""The paper's four tables, built from the results frame.

Each table is a frame of :class:`Estimate` cells (``None`` = the run did not
produce it), so CSV and Markdown render the same content and rows the run did
not produce stay visible as missing instead of being dropped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..stats import (
    ALL_RIGHT,
    PairedTest,
    clustered_sign_test,
    combine,
    image_bootstrap,
    seed_test,
    weakest,
    wilson_interval,
)
from .results import PURIFIER_ORDER, RT_ORDER, defense_order, main_results

MISSING = "missing"
RESAMPLES = 2000  # bootstrap resamples of an interval over images

ALL_DRAWS = "all draws"  # the worst case over draws, as tables label it
DRAW_MEAN = "draw-mean"
METRICS = (ALL_DRAWS, DRAW_MEAN)
WEAKEST = "weakest"  # robust accuracy over several attacks: the defense's strongest attack
AVERAGE = "average"  # clean accuracy over result files: each re-scores the same clean images


@dataclass(frozen=True)
class Estimate:
    """An accuracy (fraction) with its 95 % interval and where it came from.

    ``value`` is the draw-mean accuracy (one evaluation of a randomized defense, the paper's
    metric); ``strict`` the worst case over draws: the share of images right on every one of the
    ``draws`` draws of one evaluation, what an attacker who may resubmit that many times faces.
    The two agree on a deterministic defense. With several training seeds (``seeds`` > 1)
    ``value`` and ``strict`` are means over the seeds, ``sd`` the standard deviation of the
    seeds' values, and the interval the method-level one (seeds as the unit, docs/verdicts.md).
    """

    value: float
    low: float
    high: float
    source: str = ""  # the attack behind the number; a worst case names every attack it covers
    basis: str = ""  # how a worst case was taken
    strict: float = math.nan
    sd: float = math.nan  # across training seeds
    seeds: int = 1

    @classmethod
    def robust(cls, row) -> Estimate | None:
        if pd.isna(row["robust_accuracy"]):
            return None
        return cls(
            row["robust_accuracy"],
            row["robust_ci95_low"],
            row["robust_ci95_high"],
            row["attack"],
            strict=row["robust_strict_accuracy"],
        )

    def beats(self, other: Estimate) -> bool:
        """Higher beyond noise: the two 95 % intervals do not overlap (fallback without per-image outcomes)."""
        return self.low > other.high

    def text(self) -> str:
        spread = f" ± {100 * self.sd:.1f}" if self.seeds > 1 and not math.isnan(self.sd) else ""
        bounds = "" if math.isnan(self.low) else f" [{100 * self.low:.1f}, {100 * self.high:.1f}]"
        strict = "" if math.isnan(self.strict) else f"; {ALL_DRAWS} {100 * self.strict:.1f}"
        return f"{100 * self.value:.1f}{spread}{bounds}{strict}"


@dataclass(frozen=True)
class Outcomes:
    """Per-image fractions of ``draws`` draws right, (seeds, attacks, images), on shared images.

    Every seed and attack (for clean accuracy: every result file) scored the same ``images``;
    ``how`` says how the attack axis becomes one outcome per image: the ``weakest`` attack (the
    one with the lowest mean, per seed) or the ``average`` of replicate evaluations.
    """

    seeds: tuple
    attacks: tuple
    images: tuple
    fractions: np.ndarray
    draws: int
    how: str = WEAKEST

    def metric(self, name: str) -> np.ndarray:
        """(seeds, attacks, images) outcomes under a metric: fractions, or right on every draw (0/1)."""
        if name == DRAW_MEAN:
            return self.fractions
        if name == ALL_DRAWS:
            return (self.fractions >= ALL_RIGHT).astype(float)
        raise ValueError(f"unknown metric {name!r}: {', '.join(METRICS)}")

    def per_image(self, name: str) -> np.ndarray:
        """(seeds, images): each seed's outcome per image under its weakest attack (or the replicates' average)."""
        return combine(self.metric(name), self.how)

    def weakest_attacks(self, name: str = DRAW_MEAN) -> list[str]:
        """Per seed, the attack the worst case rests on."""
        if self.how != WEAKEST:
            return []
        return [self.attacks[k] for k in weakest(self.metric(name))[0]]

    def on(self, images) -> Outcomes:
        """The same outcomes restricted to ``images`` (in that order)."""
        position = {image: i for i, image in enumerate(self.images)}
        columns = [position[i] for i in images]
        return Outcomes(self.seeds, self.attacks, tuple(images), self.fractions[:, :, columns], self.draws, self.how)

    def restricted_to(self, seeds) -> Outcomes:
        rows = [self.seeds.index(s) for s in seeds]
        return Outcomes(tuple(seeds), self.attacks, self.images, self.fractions[rows], self.draws, self.how)


def _draws(rows: pd.DataFrame) -> int:
    draws = rows["draws"].dropna()
    return int(draws.max()) if len(draws) else 1


def seeds_of(rows: pd.DataFrame) -> list:
    """The training seeds the rows come from, in order (one None entry for results without a seed)."""
    if "seed" not in rows.columns:
        return [None]
    return sorted(rows["seed"].dropna().unique().tolist()) or [None]


def _common_outcomes(rows: pd.DataFrame, column: str, how: str) -> Outcomes | None:
    """(seeds, attacks, images) on the images every result scored, under the seeds every attack has."""
    usable = [isinstance(i, tuple) and isinstance(f, tuple) for i, f in zip(rows["sample_indices"], rows[column])]
    if not rows.size or not all(usable):
        return None
    seeds = rows["seed"].tolist() if "seed" in rows.columns else [None] * len(rows)
    seeds = [None if pd.isna(s) else s for s in seeds]
    if how == WEAKEST:
        keys = list(rows["attack"])
    else:  # replicate files: numbered within each seed
        counter: dict = {}
        keys = []
        for seed in seeds:
            counter[seed] = counter.get(seed, -1) + 1
            keys.append(counter[seed])
    table: dict = {}
    for key, seed, indices, fractions in zip(keys, seeds, rows["sample_indices"], rows[column]):
        table.setdefault(key, {})[seed] = dict(zip(indices, fractions))
    if how == AVERAGE:  # every seed has the same number of replicates: keep the fewest
        shared_seeds = sorted(set(seeds), key=lambda s: (s is None, s))
        replicates = min(sum(1 for k in table if s in table[k]) for s in shared_seeds)
        table = {k: v for k, v in table.items() if k < replicates}
    shared_seeds = sorted(
        set.intersection(*(set(per_seed) for per_seed in table.values())), key=lambda s: (s is None, s)
    )
    if not shared_seeds:
        return None
    common = sorted(set.intersection(*(set(p[s]) for p in table.values() for s in shared_seeds)))
    if not common:
        return None
    attacks = tuple(table)
    matrix = np.array([[[table[k][s][i] for i in common] for k in attacks] for s in shared_seeds], dtype=float)
    return Outcomes(tuple(shared_seeds), attacks, tuple(common), matrix, _draws(rows), how)


def robust_outcomes(rows: pd.DataFrame) -> Outcomes | None:
    """Per-image robust outcomes of one defense under the attacks in ``rows`` (None: not all have them)."""
    rows = rows.dropna(subset=["robust_accuracy"])
    return _common_outcomes(rows, "robust_fractions", WEAKEST) if len(rows) else None


def clean_outcomes(rows: pd.DataFrame) -> Outcomes | None:
    """Per-image clean outcomes of one defense: each result file is a replicate evaluation of the same
    clean images on ``draws`` draws; they are averaged, so "all draws" stays N = draws however many
    attacks were run (pooling every file's draws made it fall 0.90 / 0.67 / 0.55 with 1 / 3 / 6 files)."""
    rows = rows.dropna(subset=["clean_accuracy"])
    return _common_outcomes(rows, "clean_fractions", AVERAGE) if len(rows) else None


def outcomes_estimate(outcomes: Outcomes, source: str, basis: str = "") -> Estimate:
    """An accuracy from per-image outcomes: one seed, an image bootstrap; several, seeds as the unit."""
    per_image = outcomes.per_image(DRAW_MEAN)
    strict = float(outcomes.per_image(ALL_DRAWS).mean())
    value = float(per_image.mean())
    if len(outcomes.seeds) > 1:
        test = seed_test(per_image)
        return Estimate(value, test.low, test.high, source, basis, strict, sd=test.seed_sd, seeds=test.seeds)
    interval = image_bootstrap(outcomes.metric(DRAW_MEAN), how_a=outcomes.how, resamples=RESAMPLES)
    return Estimate(value, max(0.0, interval.low), min(1.0, interval.high), source, basis, strict)


def clean_estimate(rows: pd.DataFrame) -> Estimate | None:
    """Clean accuracy of one defense: the mean over its result files (each re-scores the same images)."""
    rows = rows.dropna(subset=["clean_accuracy"])
    if rows.empty:
        return None
    outcomes = clean_outcomes(rows)
    if outcomes is not None:
        return outcomes_estimate(outcomes, "clean")
    value = float(rows["clean_accuracy"].mean())
    strict = float(rows["clean_strict_accuracy"].mean())
    n = rows["n"].max()
    if pd.isna(n) or n <= 0:
        return Estimate(value, math.nan, math.nan, "clean", strict=strict)
    low, high = wilson_interval(value * n, int(n))
    return Estimate(value, low, high, "clean", strict=strict)


def attack_estimate(rows: pd.DataFrame) -> Estimate | None:
    """Robust accuracy under one attack: its result, or with several seeds their mean ± sd."""
    rows = rows.dropna(subset=["robust_accuracy"])
    if rows.empty:
        return None
    if len(seeds_of(rows)) < 2:
        return Estimate.robust(rows.iloc[0])
    return worst_case(rows)


def worst_case(rows: pd.DataFrame) -> Estimate | None:
    """Robust accuracy under the defense's strongest attack: the lowest of the per-attack accuracies.

    One rule for every defense and both metrics: per seed, the attack with the lowest accuracy
    over the images every attack scored. (Each image's minimum over attacks is AutoAttack's rule
    for deterministic models; on a randomized defense it is a minimum of noisy fractions, biased
    low, so it would handicap randomized defenses only: stats.weakest.) The interval is an image
    bootstrap that re-picks the attack in every resample; with several seeds, seeds are the unit.
    Without per-image outcomes the lowest attack's own result and Wilson interval stand in.
    """
    rows = rows.dropna(subset=["robust_accuracy"])
    if rows.empty:
        return None
    names = list(dict.fromkeys(rows["attack"]))
    attacks = ", ".join(names)
    outcomes = robust_outcomes(rows)
    if outcomes is None:
        lowest = Estimate.robust(rows.loc[rows["robust_accuracy"].idxmin()])
        has_all = all(
            isinstance(i, tuple) and isinstance(f, tuple)
            for i, f in zip(rows["sample_indices"], rows["robust_fractions"])
        )
        why = "no image scored by every attack" if has_all else "no per-image outcomes"
        strict = float(rows["robust_strict_accuracy"].min())
        basis = f"lowest of the per-attack accuracies: {lowest.source} ({why}: its own interval)"
        return Estimate(lowest.value, lowest.low, lowest.high, attacks, basis, strict)
    images, seeds = len(outcomes.images), len(outcomes.seeds)
    largest = max(len(i) for i in rows["sample_indices"])
    scope = f"{images} images" + (f" x {seeds} seeds" if seeds > 1 else "")
    scope += "" if images == largest else f" (common to all; up to {largest} scored)"
    chosen = ", ".join(dict.fromkeys(outcomes.weakest_attacks()))
    basis = f"lowest of the per-attack accuracies over {len(names)} attacks ({chosen}) on {scope}"
    return outcomes_estimate(outcomes, attacks, basis)


def shared(a: Outcomes | None, b: Outcomes | None) -> tuple[Outcomes, Outcomes] | None:
    """``a`` and ``b`` on the images and seeds both have (None: nothing shared)."""
    if a is None or b is None:
        return None
    images = [i for i in a.images if i in set(b.images)]
    seeds = [s for s in a.seeds if s in set(b.seeds)]
    if not images or not seeds:
        return None
    return a.on(images).restricted_to(seeds), b.on(images).restricted_to(seeds)


def paired_all_draws(a: Outcomes | None, b: Outcomes | None) -> PairedTest | None:
    """Image-level sign test (exact McNemar on one seed) of right-on-every-draw outcomes on shared images."""
    pair = shared(a, b)
    if pair is None:
        return None
    return clustered_sign_test(pair[0].per_image(ALL_DRAWS), pair[1].per_image(ALL_DRAWS))


def full_gradient(frame: pd.DataFrame) -> pd.DataFrame:
    main = main_results(frame)
    return main[main["gradient"] == "full"]


def attack_columns(frame: pd.DataFrame) -> list[tuple[str, str | None]]:
    """Full-gradient attacks with their seen/unseen label, seen first (the paper's column order)."""
    full = full_gradient(frame)
    labels = full.groupby("attack")["seen"].agg(lambda s: next((v for v in s if v), None))
    rank = {"seen": 0, "unseen": 1, None: 2}
    return sorted(labels.items(), key=lambda item: (rank[item[1]], item[0]))


def attack_label(attack: str, seen: str | None) -> str:
    return f"{attack} ({seen})" if seen else attack


def defense_cells(frame: pd.DataFrame, defense: str | None) -> dict[str, Estimate | None]:
    """clean, each attack, worst case (seen / unseen / all) of one defense; all missing if None."""
    columns = attack_columns(frame)
    rows = full_gradient(frame)
    rows = rows[rows["defense"] == defense] if defense else rows.iloc[0:0]
    by_attack = {attack: attack_estimate(group) for attack, group in rows.groupby("attack", sort=False)}
    cells: dict[str, Estimate | None] = {"clean": clean_estimate(rows)}
    for attack, seen in columns:
        cells[attack_label(attack, seen)] = by_attack.get(attack)
    for group in ("seen", "unseen"):
        if any(seen == group for _, seen in columns):
            cells[f"worst case ({group})"] = worst_case(
                rows[rows["attack"].isin([a for a, s in columns if s == group])]
            )
    cells["worst case"] = worst_case(rows[rows["attack"].isin([a for a, _ in columns])])
    cells["attacks run"] = f"{sum(by_attack.get(a) is not None for a, _ in columns)}/{len(columns)}"
    return cells


def _table(index: pd.MultiIndex | pd.Index, cells: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(cells, index=index)


def defenses_table(frame: pd.DataFrame, extra_defenses=()) -> pd.DataFrame:
    """Table (1): AT vs AP vs AToP across seen and unseen attacks, with worst cases."""
    defenses = defense_order(list(full_gradient(frame)["defense"]) + list(extra_defenses))
    return _table(pd.Index(defenses, name="defense"), [defense_cells(frame, d) for d in defenses])


def _settings(frame: pd.DataFrame) -> pd.DataFrame:
    main = main_results(frame)
    settings = main[main["kind"].isin(["ap", "atop"])].drop_duplicates("defense")
    return settings.set_index("defense").loc[defense_order(settings["defense"])]


def _find(settings: pd.DataFrame, kind: str, purifier: str, rt: str) -> str | None:
    hit = settings[(settings["kind"] == kind) & (settings["purifier"] == purifier) & (settings["rt"] == rt)]
    return hit.index[0] if len(hit) else None


def _setting_rows(frame, keys: list[tuple[str, str, bool]], names: list[str]) -> pd.DataFrame:
    settings = _settings(frame)
    cells = []
    for purifier, rt, finetuned in keys:
        defense = _find(settings, "atop" if finetuned else "ap", purifier, rt)
        cells.append({"run defense": defense or MISSING, **defense_cells(frame, defense)})
    index = pd.MultiIndex.from_tuples([(p, r, "yes" if f else "no") for p, r, f in keys], names=names)
    return _table(index, cells)


def _purifiers(frame) -> list[str]:
    present = [p for p in _settings(frame)["purifier"].dropna().unique()]
    return [p for p in PURIFIER_ORDER if p in present] + sorted(set(present) - set(PURIFIER_ORDER)) or ["gan"]


def rt_ablation_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Table (2): RT1 / RT2 / RT3 x fine-tuning off / on, for each purifier the run has."""
    keys = [(p, rt, ft) for p in _purifiers(frame) for rt in RT_ORDER for ft in (False, True)]
    return _setting_rows(frame, keys, ["purifier", "rt", "FT"])


def headline_rt(frame: pd.DataFrame) -> str:
    """The RT the purifier comparison is made at: RT2 (the paper's) when run, else the run's most common."""
    rts = _settings(frame)["rt"].dropna()
    return "rt2" if "rt2" in set(rts) or rts.empty else rts.mode().iloc[0]


def purifier_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Table (3): GAN vs AE purifier, with and without fine-tuning, at the headline RT."""
    rt = headline_rt(frame)
    present = [p for p in _purifiers(frame) if p not in PURIFIER_ORDER]
    keys = [(p, rt, ft) for p in [*PURIFIER_ORDER, *present] for ft in (False, True)]
    return _setting_rows(frame, keys, ["purifier", "rt", "FT"])


def gradient_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Table (4): classifier-only (BPDA, an upper bound) next to full-gradient robust accuracy.

    Each BPDA result meets the weakest full-gradient result of the same defense and
    attack family; defenses without a BPDA result show it as missing.
    """
    main = main_results(frame)
    full, bpda = main[main["gradient"] == "full"], main[main["gradient"] == "bpda"]
    # the families someone attacked classifier-only; with none yet, every full-gradient family (all missing)
    families = set(bpda["attack_family"]) or set(full["attack_family"])
    pairs = set(zip(bpda["defense"], bpda["attack_family"])) | set(zip(full["defense"], full["attack_family"]))
    keys = sorted(
        {(d, f) for d, f in pairs if f in families},
        key=lambda k: (defense_order(main["defense"]).index(k[0]), k[1]),
    )
    cells = []
    for defense, family in keys:

        def pick(rows, defense=defense, family=family):
            return rows[(rows["defense"] == defense) & (rows["attack_family"] == family)]

        upper, exact = worst_case(pick(bpda)), worst_case(pick(full))
        gap = None if upper is None or exact is None else 100 * (upper.value - exact.value)
        test = paired_all_draws(robust_outcomes(pick(bpda)), robust_outcomes(pick(full)))
        cells.append(
            {
                "classifier-only (BPDA)": upper,
                "full gradient": exact,
                "gap (points)": MISSING if gap is None else round(gap, 2),
                # the verdict (Holm-adjusted over the report) is summary.md's; this is the single test
                "McNemar p, all draws (unadjusted)": MISSING if test is None else float(f"{test.p_value:.3g}"),
            }
        )
    index = pd.MultiIndex.from_tuples(keys, names=["defense", "attack family"])
    return _table(index, cells)


def table_csv(table: pd.DataFrame) -> pd.DataFrame:
    """Estimates as numbers in %: value, ci95_low and ci95_high columns per cell; missing = empty."""
    out = {}
    for column in table.columns:
        values = table[column]
        if any(isinstance(v, Estimate) for v in values):
            parts = [("", "value"), ("_ci95_low", "low"), ("_ci95_high", "high"), ("_all_draws", "strict")]
            if any(isinstance(v, Estimate) and v.seeds > 1 for v in values):
                parts.append(("_seed_sd", "sd"))  # across training seeds
            for suffix, attr in parts:
                out[column + suffix] = [
                    round(100 * getattr(v, attr), 2) if isinstance(v, Estimate) else math.nan for v in values
                ]
        else:
            out[column] = [math.nan if v == MISSING else v for v in values]
    return pd.DataFrame(out, index=table.index)


def table_markdown(table: pd.DataFrame) -> str:
    shown = table.apply(
        lambda col: col.map(lambda v: v.text() if isinstance(v, Estimate) else (MISSING if v is None else v))
    )
    return shown.reset_index().to_markdown(index=False)


def _eot_text(rows: pd.DataFrame) -> str:
    """EOT samples per gradient step, with the defenses that got each (deterministic ones get 1)."""
    parts = []
    for eot, group in rows.groupby(rows["eot"].fillna(1), sort=True):
        parts.append(f"{int(eot)} ({', '.join(defense_order(group['defense']))})")
    return "; ".join(reversed(parts))


def attacks_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Every attack of the main results: method, threat model, steps and its effective EOT per defense."""
    main = main_results(frame)
    cells, names = [], []
    for attack, rows in main.groupby("attack", sort=True):
        first = rows.iloc[0]
        names.append(attack)
        cells.append(
            {
                "method": first["method"],
                "gradient": first["gradient"],
                "norm": first["norm"] or MISSING,
                "eps": MISSING if pd.isna(first["eps"]) else round(float(first["eps"]), 4),
                "steps": MISSING if pd.isna(first["steps"]) else int(first["steps"]),
                "EOT (defenses)": _eot_text(rows),
            }
        )
    return _table(pd.Index(names, name="attack"), cells)


def attacks_markdown(frame: pd.DataFrame) -> str:
    table = attacks_table(frame)
    return table.reset_index().to_markdown(index=False) if len(table) else "No attack results."


def eot_averaged(frame: pd.DataFrame) -> dict[str, str]:
    """Attacks that average more than one random-transform sample per gradient step -> their EOT text."""
    main = main_results(frame)
    return {attack: _eot_text(rows) for attack, rows in main.groupby("attack", sort=True) if (rows["eot"] > 1).any()}
