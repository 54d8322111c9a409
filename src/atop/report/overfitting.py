"""Overfitting flags of the monitored training stages, for the summary and the training-curves figure.

The detectors (src/atop/diagnostics/detectors.py) run on each curve that carries the monitor's
columns (train_clean ... val_pgd: the AT baseline and AToP fine-tuning).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..diagnostics.detectors import COLUMNS, overfitting_flags
from ..diagnostics.settings import OVERFITTING_DEFAULTS, overfitting_thresholds


def curve_stage(path: Path) -> str:
    """curves/classifier/seed0.csv -> "classifier seed0";
    curves/purifier_pretrain/seed0/gan-rt2.csv -> "purifier pretrain seed0 gan-rt2"."""
    parts = list(path.with_suffix("").parts)
    if "curves" in parts:
        parts = parts[len(parts) - parts[::-1].index("curves") :]
    else:
        parts = parts[-2:] if len(parts) > 1 else parts
    return " ".join(parts).replace("_", " ")


def monitored(curve: pd.DataFrame) -> bool:
    return any(c in curve.columns for c in COLUMNS)


def stage_flags(curve_paths, thresholds: dict | None = None) -> list[dict]:
    """Per monitored curve: the stage's name and both detectors' findings."""
    thresholds = overfitting_thresholds(thresholds)
    flags = []
    for path in map(Path, curve_paths):
        curve = pd.read_csv(path)
        if "epoch" in curve.columns and len(curve) and monitored(curve):
            flags.append({"stage": curve_stage(path), **overfitting_flags(curve.to_dict("records"), thresholds)})
    return flags


def overfitting_lines(flags: list[dict], thresholds: dict | None = None) -> list[str]:
    """The summary's section: one line per monitored stage, the rules and their false-alarm rate stated."""
    t = {**OVERFITTING_DEFAULTS, **(thresholds or {})}
    lines = [
        (
            "Monitors: clean, FGSM and PGD accuracy on fixed training and validation batches after every epoch "
            "(training-curves figure). Catastrophic overfitting (Kim, Lee & Lee, AAAI 2021): in one epoch FGSM "
            f"accuracy rises (>= {100 * t['fgsm_rise']:.0f} pp) while PGD accuracy falls (>= {100 * t['pgd_drop']:.0f} pp). "
            "Robust overfitting (Rice et al., ICML 2020): validation PGD accuracy at the end is below its best epoch "
            f"(>= {100 * t['robust_drop']:.0f} pp) while training PGD accuracy rose by more than "
            f"{100 * t['train_rise']:.0f} pp. Each change must also be significant (one-sided Fisher tests on the "
            f"fixed images, the choice among epochs paid for): each detector raises a false alarm on at most "
            f"{100 * t['alpha']:.0f} % of stages without overfitting."
        ),
        "",
    ]
    if not flags:
        return lines + ["- No training stage of this run was monitored."]
    for flag in flags:
        found = []
        catastrophic = flag["catastrophic"]
        if catastrophic["detected"]:
            where = "; ".join(
                f"{split} batch epoch {', '.join(map(str, e))}" for split, e in catastrophic["epochs"].items() if e
            )
            found.append(f"**CATASTROPHIC OVERFITTING** ({where})")
        robust = flag["robust"]
        if robust.get("detected"):
            found.append(
                f"**ROBUST OVERFITTING** (validation PGD accuracy {100 * robust['val_pgd_drop']:.1f} pp below its best "
                f"epoch {robust['best_epoch']}, p = {robust['p_value']:.2g}; training PGD accuracy up "
                f"{100 * robust['train_pgd_rise']:.1f} pp)"
            )
        line = f"- {flag['stage']}: " + ("; ".join(found) if found else "neither detected")
        if robust.get("monitored") and not robust.get("detected"):
            size = robust.get("detectable_drop")
            line += (
                f" (on {robust['images']} validation images over {flag['epochs_run']} epochs a fall from the best "
                + (
                    f"of {100 * size:.0f} pp or more would be detected)"
                    if size is not None
                    else "could not be detected)"
                )
            )
        weak = {split: epochs for split, epochs in flag.get("pgd_above_fgsm", {}).items() if epochs}
        if weak:
            where = "; ".join(f"{split} batch epoch {', '.join(map(str, e))}" for split, e in weak.items())
            line += (
                f". WARNING: the monitor's PGD scored above its FGSM ({where}): a PGD weaker than one FGSM step "
                "cannot show catastrophic overfitting; raise the stage's monitor.steps or monitor.eot"
            )
        lines.append(line + ".")
    return lines
