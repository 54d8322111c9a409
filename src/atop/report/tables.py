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

from ..stats import PairedTest, aligned, all_draws_right, bootstrap_mean_interval, mcnemar_exact, wilson_interval
from .results import PURIFIER_ORDER, RT_ORDER, defense_order, main_results

MISSING = "missing"
MIN_OF_AVERAGES = "lowest of the per-attack averages"
RESAMPLES = 2000  # bootstrap resamples of an interval over training seeds and images


ALL_DRAWS = "all draws"  # the worst case over draws, as tables label it


@dataclass(frozen=True)
class Estimate:
    """An accuracy (fraction) with its 95 % interval and where it came from.

    ``value`` is the draw-mean accuracy (one evaluation of a randomized defense, the paper's
    metric); ``strict`` the worst case over draws: the share of images right on every draw, what
    an attacker who may resubmit faces. The two agree on a deterministic defense. With several
    training seeds (``seeds`` > 1) ``value`` and ``strict`` are means over the seeds, ``sd`` the
    standard deviation of the seeds' values, and the interval a bootstrap over seeds and images.
    """

    value: float
    low: float
    high: float
    source: str = ""  # the attack behind the number; a worst case names every attack it covers
    basis: str = ""  # how a worst case was taken: per image, or (fallback) the lowest of the averages
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
        marker = " (min of averages)" if self.basis.startswith(MIN_OF_AVERAGES) else ""
        strict = "" if math.isnan(self.strict) else f"; {ALL_DRAWS} {100 * self.strict:.1f}"
        return f"{100 * self.value:.1f}{spread}{bounds}{strict}{marker}"


@dataclass(frozen=True)
class Outcomes:
    """Per-image fractions of ``draws`` draws right, (attacks, units), on the images every attack scored.

    A unit is an image; with several training seeds it is a (seed, image) pair, sorted by seed with
    the same images under every seed, so a paired test pools the seeds (stratified by seed) and a
    bootstrap resamples seeds, then images.
    """

    indices: tuple
    fractions: np.ndarray
    draws: int

    @property
    def groups(self) -> tuple | None:
        """The training seed of each unit, or None for one seed."""
        if self.indices and isinstance(self.indices[0], tuple):
            return tuple(seed for seed, _ in self.indices)
        return None

    def per_seed(self, values: np.ndarray) -> dict:
        """Mean of per-unit ``values`` under each seed ({None: mean} for one seed)."""
        groups = self.groups
        if groups is None:
            return {None: float(np.mean(values))}
        labels = np.asarray(groups)
        return {seed: float(np.mean(values[labels == seed])) for seed in dict.fromkeys(groups)}


def _draws(rows: pd.DataFrame) -> int:
    draws = rows["draws"].dropna()
    return int(draws.max()) if len(draws) else 1


def seeds_of(rows: pd.DataFrame) -> list:
    """The training seeds the rows come from, in order (one None entry for results without a seed)."""
    if "seed" not in rows.columns:
        return [None]
    return sorted(rows["seed"].dropna().unique().tolist()) or [None]


def _common_outcomes(rows: pd.DataFrame, column: str, draws: int) -> Outcomes | None:
    """(attacks, units) on the images every attack scored under every seed all the attacks have."""
    usable = [isinstance(i, tuple) and isinstance(f, tuple) for i, f in zip(rows["sample_indices"], rows[column])]
    if not rows.size or not all(usable):
        return None
    seeds = seeds_of(rows)
    if len(seeds) < 2:
        per_image = [dict(zip(i, f)) for i, f in zip(rows["sample_indices"], rows[column])]
        common = sorted(set.intersection(*(set(p) for p in per_image)))
        if not common:
            return None
        return Outcomes(tuple(common), np.array([[p[i] for i in common] for p in per_image]), draws)
    by_attack: dict[str, dict] = {}
    for attack, seed, indices, fractions in zip(rows["attack"], rows["seed"], rows["sample_indices"], rows[column]):
        by_attack.setdefault(attack, {})[seed] = dict(zip(indices, fractions))
    shared_seeds = sorted(set.intersection(*(set(per_seed) for per_seed in by_attack.values())))
    images = [set(p) for per_seed in by_attack.values() for seed, p in per_seed.items() if seed in shared_seeds]
    common = sorted(set.intersection(*images)) if images else []
    if not shared_seeds or not common:
        return None
    units = tuple((seed, i) for seed in shared_seeds for i in common)
    matrix = np.array([[per_seed[seed][i] for seed, i in units] for per_seed in by_attack.values()])
    return Outcomes(units, matrix, draws)


def robust_outcomes(rows: pd.DataFrame) -> Outcomes | None:
    """Per-image robust outcomes of one defense under the attacks in ``rows`` (None: not all have them)."""
    rows = rows.dropna(subset=["robust_accuracy"])
    return _common_outcomes(rows, "robust_fractions", _draws(rows)) if len(rows) else None


def clean_outcomes(rows: pd.DataFrame) -> Outcomes | None:
    """Per-image clean outcomes of one defense, pooling the draws of every result file (each re-scores clean)."""
    rows = rows.dropna(subset=["clean_accuracy"])
    pooled = _common_outcomes(rows, "clean_fractions", _draws(rows)) if len(rows) else None
    if pooled is None:
        return None
    return Outcomes(pooled.indices, pooled.fractions.mean(axis=0, keepdims=True), pooled.draws * len(rows))


def _over_seeds(outcomes: Outcomes, unit_values: np.ndarray, strict_values: np.ndarray) -> tuple:
    """(mean, sd, low, high, strict) over training seeds: seed means, their sd, a seeds-then-images bootstrap."""
    seed_means = list(outcomes.per_seed(unit_values).values())
    strict = float(np.mean(list(outcomes.per_seed(strict_values).values())))
    low, high = bootstrap_mean_interval(unit_values, outcomes.groups, resamples=RESAMPLES)
    return float(np.mean(seed_means)), float(np.std(seed_means, ddof=1)), low, high, strict


def clean_estimate(rows: pd.DataFrame) -> Estimate | None:
    """Clean accuracy of one defense: the mean over its result files (each re-scores the same images)."""
    rows = rows.dropna(subset=["clean_accuracy"])
    if rows.empty:
        return None
    outcomes = clean_outcomes(rows)
    if outcomes is not None and outcomes.groups is not None:
        per_image = outcomes.fractions[0]
        value, sd, low, high, strict = _over_seeds(outcomes, per_image, all_draws_right(per_image).astype(float))
        return Estimate(value, low, high, "clean", strict=strict, sd=sd, seeds=len(set(outcomes.groups)))
    value = float(rows["clean_accuracy"].mean())
    strict = (
        float(all_draws_right(outcomes.fractions).mean()) if outcomes else float(rows["clean_strict_accuracy"].min())
    )
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
    """Robust accuracy against the best attack per image (AutoAttack's per-sample worst case).

    Each image counts with the lowest fraction of draws any attack left right, averaged over the
    images every attack scored (the intersection of their sample indices; all of them when the run
    used one subset, as it does). The interval is Wilson on that mean, as for a single attack; with
    several training seeds the mean over seeds ± their sd, with a seeds-then-images bootstrap interval.
    Without per-image outcomes, or with no image in common, it falls back to the lowest of the
    per-attack averages, marked in ``basis``: that can only overstate the per-image worst case.
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
        return Estimate(lowest.value, lowest.low, lowest.high, attacks, f"{MIN_OF_AVERAGES} ({why})", strict)
    worst = outcomes.fractions.min(axis=0)
    common = len(outcomes.indices)
    largest = max(len(i) for i in rows["sample_indices"])
    if outcomes.groups is not None:
        seeds = len(set(outcomes.groups))
        images = common // seeds
        value, sd, low, high, strict = _over_seeds(outcomes, worst, all_draws_right(outcomes.fractions).astype(float))
        scope = f"{images} images x {seeds} seeds" + ("" if images == largest else f" (common to all; up to {largest})")
        basis = f"per-image minimum over {len(names)} attacks on {scope}"
        return Estimate(value, low, high, attacks, basis, strict, sd=sd, seeds=seeds)
    value = float(worst.mean())
    low, high = wilson_interval(value * common, common)
    scope = f"{common} images" + ("" if common == largest else f" (common to all; up to {largest} scored)")
    strict = float(all_draws_right(outcomes.fractions).mean())
    return Estimate(value, low, high, attacks, f"per-image minimum over {len(names)} attacks on {scope}", strict)


def paired_all_draws(a: Outcomes | None, b: Outcomes | None) -> PairedTest | None:
    """Exact McNemar test of right-on-every-draw outcomes on the images both scored (None without them)."""
    if a is None or b is None:
        return None
    common, ia, ib = aligned(a.indices, range(len(a.indices)), b.indices, range(len(b.indices)))
    if not common:
        return None
    return mcnemar_exact(all_draws_right(a.fractions[:, ia]), all_draws_right(b.fractions[:, ib]))


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
