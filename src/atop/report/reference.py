"""The paper's published numbers (config/reference/*.csv) joined to the run's results."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from ..attack_catalog import paper_family
from ..config import number
from ..stats import equivalence
from .estimates import Estimate, clean_estimate, worst_case
from .results import main_results

REFERENCE_COLUMNS = [
    "setting",
    "dataset",
    "defense",
    "purifier",
    "rt",
    "attack",
    "gradient",
    "metric",
    "norm",
    "eps",
    "n",
    "value",
    "note",
]


# The joined table (tables/reference.csv), and the columns its Markdown page shows.
# What identifies one of the paper's numbers (with its metric).
PAPER_NUMBER = ["paper_setting", "paper_dataset", "paper_defense", "paper_purifier", "paper_rt", "paper_attack"]
JOINED_COLUMNS = [
    *PAPER_NUMBER,
    "gradient",
    "metric",
    "paper_eps",
    "paper_n",
    "paper_value",
    "run_defense",
    "run_attack",
    "run_eps",
    "run_n",
    "run_value",
    "run_ci95_low",
    "run_ci95_high",
    "status",
    "difference",
    "equivalence",
    "note",
]
SHOWN_COLUMNS = [
    c for c in JOINED_COLUMNS if c not in ("paper_eps", "paper_n", "run_n", "run_ci95_low", "run_ci95_high", "note")
]


def load_reference(paths) -> pd.DataFrame:
    """Reference rows from CSV files; a file missing a column fails with its name."""
    frames = []
    for path in paths:
        frame = pd.read_csv(path, comment="#", dtype=str, keep_default_na=False)
        absent = [c for c in REFERENCE_COLUMNS if c not in frame.columns]
        if absent:
            raise ValueError(f"reference file {path} lacks columns {absent}; expected {REFERENCE_COLUMNS}")
        bad = frame[frame["metric"].map(lambda m: m not in ("clean", "robust"))]
        if len(bad):
            raise ValueError(f"reference file {path}: metric must be clean or robust, got {sorted(set(bad['metric']))}")
        frame["value"] = pd.to_numeric(frame["value"], errors="raise")
        frame["source"] = Path(path).name
        frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=[*REFERENCE_COLUMNS, "source"])
    return pd.concat(frames, ignore_index=True)


def _paper_family(main: pd.DataFrame) -> pd.Series:
    """The paper's RT x FT ablation names its classifier-only transfer attacks by their loss (PGD-1000,
    CW-100): each attack's ``paper_family`` in src/atop/attack_catalog.py."""
    return pd.Series(
        [paper_family(str(m), f) for m, f in zip(main["method"], main["attack_family"], strict=True)],
        index=main.index,
        dtype=object,
    )


def _budget_text(eps: float) -> str:
    return f"{eps * 255:.4g}/255" if eps < 1 else f"{eps:.4g}"


def _matching(main: pd.DataFrame, ref) -> pd.DataFrame:
    rows = main[(main["kind"] == ref["defense"]) & (main["gradient"] == ref["gradient"])]
    rows = rows[_paper_family(rows) == ref["attack"]]
    for key in ("purifier", "rt"):  # empty in the reference = not stated: any run setting matches
        if ref[key]:
            rows = rows[rows[key] == ref[key]]
    return rows


EQUIVALENCE_MARGIN = 0.05  # config verdicts.equivalence_margin: how close "reproduces" must be (fraction)
Z90_OVER_Z95 = 1.644854 / 1.959964  # a 90 % interval from a 95 % one's half-widths (normal scale)


def join_reference(
    frame: pd.DataFrame, reference: pd.DataFrame, dataset: str, margin: float = EQUIVALENCE_MARGIN
) -> pd.DataFrame:
    """One row per (paper number, matching run defense): the run's number next to the paper's.

    Difference and interval check are given only where the run is comparable (same
    dataset and budget); otherwise ``status`` says why not, so a digits run never
    pretends to reproduce a CIFAR number.
    """
    main = main_results(frame)
    rows = []
    for _, ref in reference.iterrows():
        matches = _matching(main, ref)
        base = {
            **{f"paper_{c}": ref[c] for c in ("setting", "dataset", "defense", "purifier", "rt", "attack")},
            "gradient": ref["gradient"],
            "metric": ref["metric"],
            "paper_eps": ref["eps"],
            "paper_n": ref["n"],
            "paper_value": ref["value"],
        }
        if matches.empty:
            rows.append({**base, "status": "not run", "note": ref["note"]})
            continue
        for defense, group in matches.groupby("defense", sort=False):
            if ref["metric"] == "clean":
                estimate = clean_estimate(main[main["defense"] == defense])
            else:
                estimate = worst_case(group)  # per image over the matching attacks
            robust = estimate and ref["metric"] == "robust"
            picked = group[group["attack"].isin(estimate.source.split(", "))] if robust else group
            run_eps = float(picked["eps"].iloc[0])
            rows.append({**base, **_compare(ref, estimate, dataset, run_eps, picked, defense, margin)})
    joined = pd.DataFrame(rows, columns=JOINED_COLUMNS)
    joined.attrs["equivalence_margin"] = margin
    return joined


def _compare(
    ref, estimate: Estimate | None, dataset: str, run_eps: float, picked: pd.DataFrame, defense: str, margin: float
) -> dict:
    out = {
        "run_defense": defense,
        "run_attack": ", ".join(dict.fromkeys(picked["attack"])),
        "run_eps": _budget_text(run_eps) if not math.isnan(run_eps) else "",
        "run_n": int(picked["n"].max()) if picked["n"].notna().any() else None,
        "note": ref["note"],
    }
    if estimate is None:
        return {**out, "status": "run has no number"}
    out |= {
        "run_value": round(100 * estimate.value, 2),
        "run_ci95_low": round(100 * estimate.low, 2),
        "run_ci95_high": round(100 * estimate.high, 2),
    }
    paper_eps = number(ref["eps"]) if ref["eps"] else math.nan
    if ref["dataset"] != dataset:
        return {**out, "status": f"not comparable: dataset differs (run {dataset}, paper {ref['dataset']})"}
    if ref["metric"] == "robust" and not math.isclose(run_eps, paper_eps, abs_tol=1e-6):
        return {**out, "status": f"not comparable: budget differs (run {out['run_eps']}, paper {ref['eps']})"}
    # reproduction is an equivalence test: the run's 90 % interval inside the paper's number +- margin.
    # "Inside the 95 % interval" made a run with fewer images (a wider interval) reproduce more easily.
    low90 = estimate.value - Z90_OVER_Z95 * (estimate.value - estimate.low)
    high90 = estimate.value + Z90_OVER_Z95 * (estimate.high - estimate.value)
    test = equivalence(estimate.value, low90, high90, ref["value"] / 100, margin)
    return {
        **out,
        "status": "comparable",
        "difference": round(100 * estimate.value - ref["value"], 2),
        "equivalence": test.verdict,
    }


def reference_summary(joined: pd.DataFrame) -> dict:
    comparable = joined[joined["status"] == "comparable"]
    return {
        "paper_numbers": int(joined.drop_duplicates([*PAPER_NUMBER, "metric"]).shape[0]),
        "run_next_to_paper": int(joined["run_value"].notna().sum()),
        "comparable": len(comparable),
        "equivalent": int((comparable["equivalence"] == "equivalent").sum()),
        "different": int((comparable["equivalence"] == "different").sum()),
        "equivalence_margin": joined.attrs.get("equivalence_margin", EQUIVALENCE_MARGIN),
    }
