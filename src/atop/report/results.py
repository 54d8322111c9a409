"""Result JSONs -> one tidy frame, tolerant of fields older or newer results lack.

Every field is read with ``.get``: the evaluation grows (BPDA, seen/unseen labels,
obfuscation checks, sweeps), and a report on partial or older results must
still come out, showing what it could not find as missing.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..attack_catalog import attack_family
from ..config import ConfigError, number
from ..defense_kinds import DEFENSES, KIND_ORDER, split_defense

log = logging.getLogger("atop.report")

RT_ORDER = ("rt1", "rt2", "rt3")
PURIFIER_ORDER = ("gan", "ae")


@dataclass(frozen=True)
class DefenseSetting:
    """What a defense name says: its kind and, for purification, purifier and RT."""

    name: str
    kind: str  # a registered kind (defense_kinds.DEFENSES), or the name itself when unrecognised
    purifier: str | None = None  # gan | ae
    rt: str | None = None  # rt1 | rt2 | rt3

    @property
    def finetuned(self) -> bool | None:
        return DEFENSES[self.kind].finetuned if self.kind in DEFENSES else None


# Architecture-name prefixes of each family: the paper's GAN purifier is DeepFill v2.
FAMILY_PREFIXES = {"gan": ("gan", "deepfill"), "ae": ("ae",)}


def purifier_family(arch: str | None) -> str | None:
    """``gan_unet`` / ``deepfill_v2`` -> ``gan``: the paper compares purifier families, not architectures."""
    if not arch:
        return None
    arch = arch.lower()
    return next((family for family in PURIFIER_ORDER if arch.startswith(FAMILY_PREFIXES[family])), arch)


def parse_defense(name: str, purifier: str | None = None, rt: str | None = None) -> DefenseSetting:
    """``atop-gan-rt2`` -> atop / gan / rt2 (defense_kinds.split_defense, then the variant read as purifier
    family and RT); bare ``ap``/``atop`` take the experiment's purifier and RT; an unknown name is its own kind."""
    try:
        kind, variant = split_defense(name)
    except KeyError:
        return DefenseSetting(name, name)
    if DEFENSES[kind].purifier_stage is None:
        return DefenseSetting(name, kind)
    parts = variant.split("-") if variant else []
    named_rt = next((p for p in parts if p in RT_ORDER), None)
    named_purifier = next((purifier_family(p) for p in parts if p not in RT_ORDER), None)
    return DefenseSetting(name, kind, named_purifier or purifier_family(purifier), named_rt or rt)


def defense_order(names) -> list[str]:
    """Paper order (defense_kinds.KIND_ORDER: standard, AT, AP, AToP), then purifier and RT; unknown names last."""

    def key(name: str):
        s = parse_defense(name)
        known = s.kind in KIND_ORDER
        return (
            not known,
            KIND_ORDER.index(s.kind) if known else 0,
            PURIFIER_ORDER.index(s.purifier) if s.purifier in PURIFIER_ORDER else len(PURIFIER_ORDER),
            s.rt or "",
            name,
        )

    return sorted(dict.fromkeys(names), key=key)


def _gradient(result: dict) -> str:
    """``bpda`` for attacks computed on the classifier only (upper bounds), else ``full``."""
    flagged = str(result.get("gradient", "")).lower().startswith("bpda") or bool(result.get("upper_bound"))
    return "bpda" if flagged or str(result.get("method", "")).startswith("bpda") else "full"


def _seen(value) -> str | None:
    if isinstance(value, bool):
        return "seen" if value else "unseen"
    if isinstance(value, str) and value.lower() in ("seen", "unseen"):
        return value.lower()
    return None


def _failed_checks(checks, outcome=False) -> list[str]:
    """Names of obfuscation checks whose ``passed`` is ``outcome``: False (failed) or None (no outcome
    recorded), whether a check is a bool or a dict with ``passed``."""
    if not isinstance(checks, dict):
        return []
    failed = []
    for name, check in checks.items():
        passed = check.get("passed") if isinstance(check, dict) else check
        if passed is outcome:
            failed.append(name)
    return failed


def _interval(block: dict) -> tuple[float, float]:
    ci = block.get("ci95") or [math.nan, math.nan]
    return float(ci[0]), float(ci[1])


def _sweep_value(value) -> float:
    try:
        return float(number(value))
    except (ConfigError, TypeError, ValueError):
        return math.nan


def _nan(value) -> float:
    return math.nan if value is None else float(value)


# Per-image outcomes (the worst case over attacks is taken image by image); too long for robustness.csv.
PER_IMAGE_COLUMNS = ("sample_indices", "robust_fractions", "clean_fractions")


def _per_image(result: dict, key: str = "robust_correct_fraction"):
    """(sample indices, per-image fractions of draws right) or (None, None) when absent or inconsistent."""
    indices = result.get("sample_indices")
    fractions = (result.get("per_sample") or {}).get(key)
    if not indices or not fractions or len(indices) != len(fractions):
        return None, None
    return tuple(int(i) for i in indices), tuple(float(f) for f in fractions)


def result_row(result: dict, path: str, purifier: str | None = None, rt: str | None = None) -> dict:
    """One result JSON as one flat row; anything the JSON lacks is NaN/None."""
    clean, robust = result.get("clean") or {}, result.get("robust") or {}
    indices, fractions = _per_image(result)
    _, clean_fractions = _per_image(result, "clean_correct_fraction")
    setting = parse_defense(str(result["defense"]), result.get("purifier") or purifier, result.get("transform") or rt)
    method = str(result.get("method") or result["attack"])
    family = attack_family(method)
    sweep = result.get("sweep") if isinstance(result.get("sweep"), dict) else {}
    seed = result.get("seed")
    return {
        "defense": setting.name,
        "seed": int(seed) if isinstance(seed, (int, float)) and not isinstance(seed, bool) else None,
        "kind": setting.kind,
        "purifier": setting.purifier,
        "rt": setting.rt,
        "finetuned": setting.finetuned,
        "attack": str(result["attack"]),
        "method": method,
        "attack_family": family,
        "gradient": _gradient(result),
        "seen": _seen(result.get("seen")),
        "norm": result.get("norm"),
        "eps": _nan(result.get("eps")),
        "steps": _nan(result.get("steps")),
        "eot": _nan(result.get("eot")),
        "randomized": result.get("randomized"),
        "sweep": bool(sweep),
        "sweep_name": sweep.get("name"),
        "sweep_param": sweep.get("param"),
        "sweep_value": _sweep_value(sweep.get("value")),
        "n": _nan(result.get("n", robust.get("n"))),
        "draws": _nan(result.get("draws", robust.get("draws"))),
        "clean_accuracy": _nan(clean.get("accuracy")),
        "clean_strict_accuracy": _nan(clean.get("strict_accuracy")),
        "clean_ci95_low": _interval(clean)[0],
        "clean_ci95_high": _interval(clean)[1],
        "robust_accuracy": _nan(robust.get("accuracy")),
        "robust_strict_accuracy": _nan(robust.get("strict_accuracy")),
        "robust_ci95_low": _interval(robust)[0],
        "robust_ci95_high": _interval(robust)[1],
        "checks_recorded": bool(result.get("checks") or result.get("obfuscation_checks")),
        "failed_checks": ";".join(_failed_checks(result.get("checks") or result.get("obfuscation_checks"))),
        "unknown_checks": ";".join(_failed_checks(result.get("checks") or result.get("obfuscation_checks"), None)),
        "wall_seconds": _nan(result.get("wall_seconds")),
        "images_per_second": _nan(result.get("images_per_second")),
        "dataset": result.get("dataset"),
        "path": path,
        "sample_indices": indices,
        "robust_fractions": fractions,
        "clean_fractions": clean_fractions,
    }


def find_files(paths, suffix: str) -> list[Path]:
    """Files named directly, plus every ``*suffix`` under folders; missing paths are skipped."""
    found = []
    for path in map(Path, paths):
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob(f"*{suffix}") if not p.name.startswith(".")))
        elif path.is_file():
            found.append(path)
    return list(dict.fromkeys(found))


def check_result(result) -> None:
    """Raise ValueError (TypeError) naming the field of a result no evaluation writes (a damaged or edited file)."""
    if not isinstance(result, dict):
        raise TypeError(f"a result is a JSON object, not {type(result).__name__}")
    for field in ("defense", "attack"):
        if not isinstance(result.get(field), str):
            raise TypeError(f"field {field!r} is missing or not a name")
    for block in ("clean", "robust"):
        section = result.get(block)
        if section is None:
            continue
        if not isinstance(section, dict):
            raise TypeError(f"field {block!r} is not an object")
        accuracy = section.get("accuracy")
        for name in ("accuracy", "strict_accuracy"):
            value = section.get(name)
            if value is not None and not (isinstance(value, (int, float)) and 0 <= value <= 1):
                raise ValueError(f"{block}.{name} = {value!r} is not an accuracy in [0, 1]")
        interval = section.get("ci95")
        if interval is None or accuracy is None:
            continue
        if (
            not isinstance(interval, list)
            or len(interval) != 2
            or not all(isinstance(v, (int, float)) and 0 <= v <= 1 for v in interval)
        ):
            raise ValueError(f"{block}.ci95 = {interval!r} is not an interval within [0, 1]")
        if not interval[0] - 1e-9 <= accuracy <= interval[1] + 1e-9:
            raise ValueError(f"{block}.accuracy = {accuracy!r} lies outside its own {block}.ci95 {interval}")


def load_results(paths, purifier: str | None = None, rt: str | None = None) -> tuple[pd.DataFrame, list[str]]:
    """The results frame and a list of problems (unreadable files, duplicates) to report.

    A file that is not JSON (truncated), or whose numbers no evaluation writes (NaN, an accuracy
    outside its own interval), is left out and named, with the field, among the problems;
    ``missing_results`` counts it as missing.
    """
    rows, problems = [], []
    for path in find_files(paths, ".json"):
        try:
            result = json.loads(path.read_text())
            check_result(result)
            rows.append(result_row(result, str(path), purifier, rt))
        except (OSError, ValueError, KeyError, TypeError, IndexError) as error:
            reason = "not valid JSON (truncated?)" if isinstance(error, json.JSONDecodeError) else type(error).__name__
            problems.append(f"{path}: unreadable result ({reason}: {error}); delete it and rerun its evaluation")
    frame = pd.DataFrame(rows, columns=list(result_row({"defense": "x", "attack": "y"}, "").keys()))
    # one result per training seed, defense and attack (several seeds are replicates, not duplicates)
    duplicated = frame[~frame["sweep"]].duplicated(["seed", "defense", "attack"], keep="first")
    for _, row in frame[~frame["sweep"]][duplicated].iterrows():
        seed = "" if row["seed"] is None or pd.isna(row["seed"]) else f" (seed {int(row['seed'])})"
        problems.append(f"{row['path']}: second result for {row['defense']} / {row['attack']}{seed}, ignored")
    frame = frame.drop(index=frame[~frame["sweep"]][duplicated].index)
    for problem in problems:
        log.warning(problem)
    return sort_frame(frame), problems


def sort_frame(frame: pd.DataFrame) -> pd.DataFrame:
    order = {name: i for i, name in enumerate(defense_order(frame["defense"]))}
    return (
        frame.assign(_order=frame["defense"].map(order))
        .sort_values(["_order", "attack", "eps", "steps", "eot"])
        .drop(columns="_order")
        .reset_index(drop=True)
    )


def seed_means(rows: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """One row per ``keys``: accuracies and their bounds averaged over training seeds (figures' points)."""
    numeric = ["robust_accuracy", "robust_ci95_low", "robust_ci95_high", "clean_accuracy"]
    if rows.empty or rows["seed"].nunique() < 2:
        return rows
    first = rows.drop_duplicates(keys).set_index(keys)
    means = rows.groupby(keys)[numeric].mean()
    first[numeric] = means.loc[first.index, numeric]
    return first.reset_index()


def main_results(frame: pd.DataFrame) -> pd.DataFrame:
    """The one result per (defense, attack) the tables use: sweep points excluded."""
    return frame[~frame["sweep"]]


def full_gradient(frame: pd.DataFrame) -> pd.DataFrame:
    main = main_results(frame)
    return main[main["gradient"] == "full"]


def attack_columns(frame: pd.DataFrame) -> list[tuple[str, str | None]]:
    """Full-gradient attacks with their seen/unseen label, seen first (the paper's column order)."""
    full = full_gradient(frame)
    # A label missing from some results reads as NaN (truthy): only strings are labels.
    labels = full.groupby("attack")["seen"].agg(lambda s: next((v for v in s if isinstance(v, str)), None))
    columns = [(attack, label if isinstance(label, str) else None) for attack, label in labels.items()]
    rank = {"seen": 0, "unseen": 1, None: 2}
    return sorted(columns, key=lambda item: (rank[item[1]], item[0]))


def missing_results(frame: pd.DataFrame, expected: list[str]) -> list[str]:
    """Expected result files that do not exist; without an expected list, the (defense, attack) grid's gaps.

    The workflow passes exactly the files it should produce, so an attack restricted to some defenses
    (its ``defenses:`` selection) is not missing for the others. Only a hand-run report without
    ``--expected`` falls back to the grid, and says that a gap may be by design.
    """
    if expected:
        loaded = {Path(p).resolve() for p in frame["path"]}
        return [
            f"{p} (expected, not found)" if not p.is_file() else f"{p} (expected, unreadable: see the problems)"
            for p in map(Path, expected)
            if not p.is_file() or p.resolve() not in loaded
        ]
    main = main_results(frame)
    present = set(zip(main["defense"], main["attack"]))
    return [
        f"{defense} / {attack} (no result; not run, or excluded by the attack's defenses: selection)"
        for defense in defense_order(main["defense"])
        for attack in sorted(main["attack"].unique())
        if (defense, attack) not in present
    ]
