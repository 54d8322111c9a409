"""Figures: one colour per defense everywhere, PNG and SVG side by side."""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from ..defense_kinds import DEFENSES
from ..diagnostics.detectors import COLUMNS as MONITOR_COLUMNS
from ..io import atomic_path
from .estimates import attack_estimate, clean_estimate
from .overfitting import curve_stage, monitored, stage_flags
from .results import (
    PURIFIER_ORDER,
    RT_ORDER,
    attack_columns,
    defense_order,
    full_gradient,
    main_results,
    parse_defense,
    seed_means,
)

FORMATS = ("png", "svg")
# A family of hues per defense kind (its palette in defense_kinds.py), one shade per purifier x RT
# setting, so a defense keeps its colour in every figure and every run whatever else is plotted next to it.
SETTINGS = [(p, rt) for p in PURIFIER_ORDER for rt in RT_ORDER]


def defense_colour(name: str) -> tuple[float, float, float]:
    """The colour of a defense: a function of its name only."""
    setting = parse_defense(name)
    if setting.kind in DEFENSES:
        kind = DEFENSES[setting.kind]
        if kind.purifier_stage is None:
            return sns.color_palette(kind.palette, 5)[3]
        shades = sns.color_palette(kind.palette, len(SETTINGS) + 3)[2:]
        key = (setting.purifier, setting.rt)
        # bare ap / atop (one purifier, one RT) take the headline GAN + RT2 shade
        return shades[SETTINGS.index(key) if key in SETTINGS else SETTINGS.index(("gan", "rt2"))]
    digest = int(hashlib.sha256(name.encode()).hexdigest(), 16)
    return sns.color_palette("husl", 12)[digest % 12]


def save_figure(fig, stem: Path) -> list[Path]:
    """The figure as ``stem.png`` and ``stem.svg``, each written atomically."""
    written = []
    for fmt in FORMATS:
        path = stem.with_suffix(f".{fmt}")
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=150, bbox_inches="tight")
        written.append(path)
    plt.close(fig)
    return written


def _message_figure(title: str, message: str):
    fig, ax = plt.subplots(figsize=(6, 2))
    ax.axis("off")
    ax.set_title(title)
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True, color="0.35")
    return fig


def robust_accuracy_figure(frame: pd.DataFrame, stem: Path) -> list[Path]:
    """Bars: clean and robust accuracy per attack per defense; whiskers are the 95 % Wilson intervals."""
    full = full_gradient(frame)
    if full.empty:
        return save_figure(_message_figure("Clean and robust accuracy", "no full-gradient results yet"), stem)
    defenses = defense_order(full["defense"])
    groups = [("clean", None)] + attack_columns(frame)
    width = 0.8 / len(defenses)
    sns.set_theme(style="whitegrid", context="notebook")
    fig, ax = plt.subplots(figsize=(2.0 + 1.1 * len(groups) * max(1, len(defenses) / 3), 4.4))
    for i, defense in enumerate(defenses):
        rows = full[full["defense"] == defense]
        values, lows, highs = [], [], []
        for attack, _ in groups:
            if attack == "clean":
                estimate = clean_estimate(rows)
                value, low, high = (estimate.value, estimate.low, estimate.high) if estimate else (math.nan,) * 3
            else:
                estimate = attack_estimate(rows[rows["attack"] == attack])  # a mean over seeds when several
                value, low, high = (estimate.value, estimate.low, estimate.high) if estimate else (math.nan,) * 3
            values.append(100 * value)
            lows.append(100 * (value - low))
            highs.append(100 * (high - value))
        x = np.arange(len(groups)) - 0.4 + width * (i + 0.5)
        ax.bar(x, values, width, color=defense_colour(defense), label=defense, edgecolor="white", linewidth=0.5)
        ax.errorbar(x, values, yerr=[lows, highs], fmt="none", ecolor="0.2", capsize=2, linewidth=1)
        for xi, value in zip(x, values):
            if math.isnan(value):  # a result still missing: say so where its bar would be
                ax.text(xi, 1.5, "missing", rotation=90, ha="center", va="bottom", fontsize=7, color="0.4")
    labels = ["clean"] + [f"{a}\n({s})" if s else a for a, s in groups[1:]]
    ax.set_xticks(np.arange(len(groups)), labels)
    ax.grid(axis="x", visible=False)
    ax.set(ylim=(0, 105), ylabel="accuracy (%)", title="Clean and robust accuracy (full-gradient attacks)")
    ax.legend(title="defense", fontsize="small", bbox_to_anchor=(1.01, 1), loc="upper left")
    return save_figure(fig, stem)


def _shared_legend(fig, axes) -> None:
    """One legend for all panels, right of the last one: every defense once, in paper order."""
    handles = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    order = defense_order(handles)
    axes[-1].legend(
        [handles[k] for k in order],
        order,
        title="defense",
        fontsize="small",
        bbox_to_anchor=(1.02, 1),
        loc="upper left",
    )


def _budget_axis(norm: str) -> tuple[float, str]:
    return (255.0, "eps (x/255)") if norm == "Linf" else (1.0, f"eps ({norm or 'budget'})")


def _band(ax, x, rows: pd.DataFrame, colour, label: str) -> None:
    ax.plot(x, 100 * rows["robust_accuracy"], marker="o", color=colour, label=label)
    ax.fill_between(
        x, 100 * rows["robust_ci95_low"], 100 * rows["robust_ci95_high"], color=colour, alpha=0.15, linewidth=0
    )


def eps_series(frame: pd.DataFrame) -> dict[tuple[str, str, str], pd.DataFrame]:
    """Robust accuracy vs eps per (method, norm, defense): an eps sweep where one was run, else the
    main results, with the defense's clean accuracy as the eps = 0 point when the sweep has none."""
    full = frame[frame["gradient"] == "full"].dropna(subset=["eps", "robust_accuracy"]).fillna({"norm": ""})
    main = main_results(frame)
    series = {}
    for (method, norm, defense), rows in full.groupby(["method", "norm", "defense"]):
        swept = rows[rows["sweep_param"] == "eps"]
        rows = seed_means(swept if len(swept) else rows[~rows["sweep"]], ["attack", "eps"])
        # at one eps the strongest setting (most steps / EOT) is the curve's point
        rows = rows.sort_values("robust_accuracy").drop_duplicates("eps")
        clean = clean_estimate(main[main["defense"] == defense])
        if clean and not (rows["eps"] == 0).any():
            zero = {
                "eps": 0.0,
                "robust_accuracy": clean.value,
                "robust_ci95_low": clean.low,
                "robust_ci95_high": clean.high,
            }
            rows = pd.concat([pd.DataFrame([zero]), rows], ignore_index=True)
        series[(method, norm, defense)] = rows.sort_values("eps")
    return series


def eps_curves_figure(frame: pd.DataFrame, stem: Path) -> list[Path]:
    """Robust accuracy vs eps per defense, one panel per attack method; eps 0 is clean accuracy."""
    series = eps_series(frame)
    if not series:
        return save_figure(_message_figure("Robust accuracy vs eps", "no full-gradient results yet"), stem)
    panels = list(dict.fromkeys((method, norm) for method, norm, _ in series))
    sns.set_theme(style="whitegrid", context="notebook")
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels) + 1.5, 3.8), squeeze=False)
    for ax, (method, norm) in zip(axes[0], panels):
        scale, label = _budget_axis(norm)
        defenses = defense_order(d for m, n, d in series if (m, n) == (method, norm))
        for defense in defenses:
            rows = series[(method, norm, defense)]
            _band(ax, rows["eps"] * scale, rows, defense_colour(defense), defense)
        ax.set(title=f"{method} ({norm})", xlabel=label, ylabel="robust accuracy (%)", ylim=(0, 102))
    _shared_legend(fig, axes[0])
    fig.suptitle("Robust accuracy vs eps (eps 0 = clean accuracy; bands are 95 % intervals)", fontsize="medium")
    fig.tight_layout()
    return save_figure(fig, stem)


def sweeps_figure(frame: pd.DataFrame, stem: Path) -> list[Path]:
    """Every sweep of the evaluation (eps, steps, EOT, ...): one panel per sweep, one line per defense."""
    sweeps = frame[frame["sweep"]].dropna(subset=["robust_accuracy"])
    if sweeps.empty:
        message = "no sweeps in these results\n(robust accuracy must fall with eps, and not rise with steps / EOT)"
        return save_figure(_message_figure("Sweeps", message), stem)
    names = sorted(sweeps["sweep_name"].fillna("sweep").unique())
    sns.set_theme(style="whitegrid", context="notebook")
    fig, axes = plt.subplots(1, len(names), figsize=(4.6 * len(names) + 1.5, 3.8), squeeze=False)
    for ax, name in zip(axes[0], names):
        rows = seed_means(sweeps[sweeps["sweep_name"].fillna("sweep") == name], ["defense", "attack"])
        param = rows["sweep_param"].dropna().iloc[0] if rows["sweep_param"].notna().any() else "value"
        column = param if param in ("eps", "steps", "eot") else "sweep_value"
        scale, label = _budget_axis(rows["norm"].iloc[0]) if param == "eps" else (1.0, param)
        for defense in defense_order(rows["defense"]):
            d = rows[rows["defense"] == defense].sort_values(column)
            _band(ax, d[column] * scale, d, defense_colour(defense), defense)
        attack = rows["attack"].iloc[0].split("@")[0]
        ax.set(title=f"{name}: {attack} vs {param}", xlabel=label, ylabel="robust accuracy (%)", ylim=(0, 102))
    fig.tight_layout()
    _shared_legend(fig, axes[0])
    return save_figure(fig, stem)


_curve_stage = curve_stage


# Curve columns that are neither a loss nor an accuracy: bookkeeping and the schedule.
NOT_PLOTTED = ("epoch", "seconds", "lr", "selected")


def curve_columns(curve: pd.DataFrame) -> tuple[list[str], list[str]]:
    """``(losses, accuracies)``: the numeric columns of a training curve that go on each axis."""
    metrics = [
        c
        for c in curve.columns
        if c not in NOT_PLOTTED and c not in MONITOR_COLUMNS and pd.api.types.is_numeric_dtype(curve[c])
    ]
    accuracies = [c for c in metrics if "accuracy" in c]
    return [c for c in metrics if c not in accuracies], accuracies


# The overfitting monitor's columns: split -> line style, attack -> colour.
MONITOR_STYLES = {"train": "--", "val": "-"}
MONITOR_COLOURS = {"clean": "0.45", "fgsm": "tab:orange", "pgd": "tab:red"}


def _monitor_panel(ax, path: Path, curve: pd.DataFrame, flag: dict | None) -> None:
    """Clean / FGSM / PGD accuracy on the fixed batches; detected overfitting marked and named."""
    ax.set(title=f"{_curve_stage(path)}: overfitting monitor", xlabel="epoch", ylabel="accuracy (%)", ylim=(-2, 102))
    if not monitored(curve):
        ax.set(xticks=[], yticks=[], ylabel="")
        ax.text(0.5, 0.5, "not monitored", ha="center", va="center", transform=ax.transAxes, color="0.4")
        return
    for column in MONITOR_COLUMNS:
        if column in curve.columns:
            split, attack = column.split("_")
            ax.plot(
                curve["epoch"],
                100 * curve[column],
                MONITOR_STYLES[split],
                marker=".",
                color=MONITOR_COLOURS[attack],
                label=column,
            )
    notes = []
    if flag and flag["catastrophic"]["detected"]:
        for epoch in sorted({e for epochs in flag["catastrophic"]["epochs"].values() for e in epochs}):
            ax.axvline(epoch, color="crimson", lw=2, alpha=0.4)
        notes.append("catastrophic overfitting")
    if flag and flag["robust"]["detected"]:
        ax.axvline(flag["robust"]["best_epoch"], color="purple", ls=":", lw=2)
        notes.append(f"robust overfitting (best val PGD: epoch {flag['robust']['best_epoch']})")
    if notes:
        ax.text(
            0.02,
            0.96,
            "DETECTED: " + "; ".join(notes),
            transform=ax.transAxes,
            va="top",
            color="crimson",
            fontsize="small",
            weight="bold",
        )
    ax.legend(fontsize="x-small", ncol=2, loc="best")


def training_curves_figure(curve_paths: list[Path], stem: Path, thresholds: dict | None = None) -> list[Path]:
    """One row per training stage: losses, accuracies and (for monitored stages: the AT baseline and
    fine-tuning) the overfitting monitor's clean / FGSM / PGD accuracy, per epoch."""
    curves = [(Path(p), pd.read_csv(p)) for p in curve_paths]
    curves = [(p, c) for p, c in curves if "epoch" in c.columns and len(c)]
    if not curves:
        return save_figure(_message_figure("Training curves", "no training curves found"), stem)
    flags = {f["stage"]: f for f in stage_flags([p for p, _ in curves], thresholds)}
    panels = 3 if flags else 2
    sns.set_theme(style="whitegrid", context="notebook")
    fig, axes = plt.subplots(len(curves), panels, figsize=(5 * panels, 2.8 * len(curves)), squeeze=False)
    for (path, curve), row_axes in zip(curves, axes):
        loss_ax, acc_ax = row_axes[:2]
        if panels == 3:
            _monitor_panel(row_axes[2], path, curve, flags.get(_curve_stage(path)))
        losses, accuracies = curve_columns(curve)
        for ax, columns, label in ((loss_ax, losses, "loss"), (acc_ax, accuracies, "accuracy (%)")):
            colours = sns.color_palette("deep", max(1, len(columns)))
            for colour, column in zip(colours, columns):
                scale = 100 if column in accuracies else 1
                ax.plot(curve["epoch"], scale * curve[column], marker=".", color=colour, label=column)
            if columns:
                ax.legend(fontsize="x-small", ncol=2)
            ax.set(title=f"{_curve_stage(path)}: {label.split()[0]}", xlabel="epoch", ylabel=label)
            if not columns:
                ax.set(xticks=[], yticks=[], ylabel="")
                ax.text(
                    0.5,
                    0.5,
                    f"this stage records no {label.split()[0]}",
                    ha="center",
                    va="center",
                    transform=ax.transAxes,
                    color="0.4",
                )
    fig.tight_layout()
    return save_figure(fig, stem)


def protocols_figure(outcomes, stem: Path) -> list[Path]:
    """Left: robust accuracy under every scoring protocol (protocols.py), per defense, 95 % image-bootstrap
    whiskers. Right: the N-evaluation curve (resubmission, N = 1..draws) of the same images."""
    from ..protocols import PROTOCOLS
    from .protocols import estimate, resubmission_curve

    if not outcomes:
        return save_figure(
            _message_figure("Scoring protocols", "no protocol results (config evaluation.protocols)"), stem
        )
    sns.set_theme(style="whitegrid", context="notebook")
    fig, (bars, curve) = plt.subplots(1, 2, figsize=(12, 4.4), gridspec_kw={"width_ratios": [2, 1]})
    names = list(PROTOCOLS)
    width = 0.8 / len(outcomes)
    for i, o in enumerate(outcomes):
        colour = defense_colour(o.defense)
        values, lows, highs = [], [], []
        for name in names:
            if name in o.per_image:
                e = estimate(o.per_image[name], name)
                values.append(100 * e.value)
                lows.append(100 * (e.value - e.low))
                highs.append(100 * (e.high - e.value))
            else:
                values.append(math.nan)
                lows.append(0.0)
                highs.append(0.0)
        x = np.arange(len(names)) - 0.4 + width * (i + 0.5)
        bars.bar(x, values, width, color=colour, label=o.defense, edgecolor="white", linewidth=0.5)
        bars.errorbar(x, values, yerr=[lows, highs], fmt="none", ecolor="0.2", capsize=2, linewidth=1)
        points = resubmission_curve(o)
        n = np.arange(1, len(points) + 1)
        curve.plot(n, [100 * e.value for e in points], marker="o", color=colour, label=o.defense)
        curve.fill_between(n, [100 * e.low for e in points], [100 * e.high for e in points], color=colour, alpha=0.2)
    bars.set_xticks(np.arange(len(names)), [PROTOCOLS[name].label.replace(" (", "\n(") for name in names], fontsize=8)
    bars.grid(axis="x", visible=False)
    attack = outcomes[0].attack
    bars.set(
        ylim=(0, 105),
        ylabel="robust accuracy (%)",
        title=f"One attack budget ({attack}), {len(names)} ways to attack and score it",
    )
    bars.legend(title="defense", fontsize="small")
    curve.set(
        xlabel="N: submissions of each adversarial image",
        ylabel="robust accuracy (%)",
        ylim=(0, 105),
        title="Resubmission (N-evaluation)",
    )
    curve.set_xticks(np.arange(1, max(o.draws for o in outcomes) + 1))
    return save_figure(fig, stem)
