"""The paper's four tables, built from the results frame: which cells, in which rows and columns.

Each table is a frame of :class:`~.estimates.Estimate` cells (``None`` = the run did not produce
it), so CSV and Markdown render the same content and rows the run did not produce stay visible as
missing instead of being dropped. The numbers themselves come from estimates.py.
"""

from __future__ import annotations

import math

import pandas as pd

from ..defense_kinds import DEFENSES, KIND_ORDER
from .estimates import (
    Estimate,
    attack_estimate,
    clean_estimate,
    paired_all_draws,
    resubmission_estimates,
    robust_outcomes,
    worst_case,
)
from .results import PURIFIER_ORDER, RT_ORDER, attack_columns, defense_order, full_gradient, main_results

MISSING = "missing"
# Kinds that put a purifier in front of the classifier: the ablation tables' rows (defense_kinds.py).
PURIFIED = tuple(kind for kind in KIND_ORDER if DEFENSES[kind].purifier_stage is not None)
TABLES = {
    "defenses": "(1) AT vs AP vs AToP across seen and unseen attacks",
    "rt_ablation": "(2) Random transform x fine-tuning ablation",
    "purifiers": "(3) GAN vs AE purifier, with and without fine-tuning",
    "gradients": "(4) Classifier-only (BPDA, an upper bound) vs full-gradient attacks",
    # not the paper's: the resubmission protocol (DiffHammer, NeurIPS 2024) beside its one-shot metric
    "resubmission": "Resubmission: robust accuracy when each adversarial image is classified N times and "
    "must be right every time (N = 1: the paper's one-shot metric; randomized defenses, their strongest attack)",
    # not the paper's either: the field's competing scoring protocols side by side (report/protocols.py)
    "protocols": "Scoring protocols: each randomized defense under one attack, scored the field's competing ways on "
    "the same images (protocols.py; docs/protocols.md)",
}


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


def resubmission_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Randomized defenses (more than one draw) x N = 1..draws: the weakest full-gradient attack's
    robust accuracy when the attacker may resubmit each adversarial image N times."""
    rows = full_gradient(frame)
    defenses, cells = [], []
    for defense in defense_order(list(rows["defense"])):
        outcomes = robust_outcomes(rows[rows["defense"] == defense])
        if outcomes is None or outcomes.draws < 2:
            continue
        defenses.append(defense)
        cells.append({f"N = {n}": e for n, e in enumerate(resubmission_estimates(outcomes), start=1)})
    return _table(pd.Index(defenses, name="defense"), cells)


def _settings(frame: pd.DataFrame) -> pd.DataFrame:
    main = main_results(frame)
    settings = main[main["kind"].isin(PURIFIED)].drop_duplicates("defense")
    return settings.set_index("defense").loc[defense_order(settings["defense"])]


def _find(settings: pd.DataFrame, finetuned: bool, purifier: str, rt: str) -> str | None:
    kind = next(k for k in PURIFIED if DEFENSES[k].finetuned is finetuned)  # AToP, or AP
    hit = settings[(settings["kind"] == kind) & (settings["purifier"] == purifier) & (settings["rt"] == rt)]
    return hit.index[0] if len(hit) else None


def _setting_rows(frame, keys: list[tuple[str, str, bool]], names: list[str]) -> pd.DataFrame:
    settings = _settings(frame)
    cells = []
    for purifier, rt, finetuned in keys:
        defense = _find(settings, finetuned, purifier, rt)
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
            parts = [("", "value"), ("_ci95_low", "low"), ("_ci95_high", "high")]
            if any(isinstance(v, Estimate) and not math.isnan(v.all_draws) for v in values):
                parts.append(("_all_draws", "all_draws"))  # not in the resubmission table: its N = draws
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
