"""Across defenses: the diagnostics table, its figures, and the EOT-sufficiency checks."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")

import pandas as pd

from ..io import atomic_path
from .settings import MAX_EOT

# Table column -> its label; the figure plots each against test robust accuracy.
MEASURES = {
    "robust_generalization_gap": "robust generalization gap (train - test)",
    "margin": "output margin at x_adv (train)",
    "input_gradient_norm": "input-gradient norm at x_adv (train)",
    "kl": "KL(p(x) || p(x_adv)) (train)",
    "flatness_classifier": "weight flatness, classifier",
    "flatness_purifier": "weight flatness, purifier",
    "mean_resultant_length": "gradient concentration R",
}


def measures_table(measures: list[dict], concentration: list[dict], distortion: list[dict] = ()) -> pd.DataFrame:
    """One row per defense: robust accuracies, every measure, R, the EOT the defense needs and (fine-tuned
    defenses) the decision-boundary distortion."""
    by_defense = {c["defense"]: c for c in concentration}
    distorted = {d["defense"]: d["distortion"] for d in distortion}
    rows = []
    for entry in measures:
        gc = by_defense.get(entry["defense"], {})
        flatness = entry["flatness"]
        rows.append(
            {
                "defense": entry["defense"],
                "randomized": entry["randomized"],
                "attack": entry["attack"],
                "draws": entry["draws"],
                "train_robust_accuracy": entry["train"]["robust_accuracy"],
                "test_robust_accuracy": entry["test"]["robust_accuracy"],
                "robust_generalization_gap": entry["robust_generalization_gap"],
                "margin": entry["train"]["margin"],
                "input_gradient_norm": entry["train"]["input_gradient_norm"],
                "kl": entry["train"]["kl"],
                "flatness_classifier": flatness.get("classifier", {}).get("flatness"),
                "flatness_purifier": flatness.get("purifier", {}).get("flatness"),
                "mean_resultant_length": gc.get("mean_resultant_length"),
                "eot_needed": gc.get("eot_needed"),
                "boundary_distortion": distorted.get(entry["defense"]),
            }
        )
    return pd.DataFrame(rows)


def _markdown(table: pd.DataFrame) -> str:
    shown = table.astype(object).where(table.notna(), "-")
    header = "| " + " | ".join(shown.columns) + " |\n|" + "---|" * len(shown.columns) + "\n"
    body = "".join(
        "| " + " | ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row) + " |\n"
        for row in shown.itertuples(index=False)
    )
    return header + body


def eot_sufficiency_checks(concentration: list[dict], results: list[dict]) -> list[dict]:
    """Check records (checks.py's shape): every EOT evaluation of a randomized defense uses at least the EOT it needs.

    An evaluation is judged when its attack follows the full gradient with EOT samples
    (``params`` has ``eot``) on a randomized defense; the need is the smallest k whose
    mean-gradient cosine with the K-draw reference reached the threshold. Where the curve
    never reached it (up to concentration.MAX_EOT), every evaluation fails.
    """
    by_defense = {c["defense"]: c for c in concentration}
    records = []
    for result in results:
        gc = by_defense.get(result["defense"])
        if gc is None or not result.get("randomized") or result.get("gradient") != "full":
            continue
        if "eot" not in result.get("params", {}):
            continue
        eot, needed, threshold = result["params"]["eot"], gc["eot_needed"], gc["cosine_threshold"]
        reference = gc["reference_draws"]
        if needed is None:
            passed = False
            need = f"no k up to {MAX_EOT} reaches expected cosine {threshold:g} to the expected gradient"
            verdict = "EOT TOO SMALL"
        else:
            passed = eot >= needed
            need = (
                f"k = {needed} draws reach expected cosine {threshold:g} to the expected gradient "
                f"(estimated from {reference} draws per image)"
            )
            verdict = "enough" if passed else "EOT TOO SMALL: the attack follows a noisy gradient"
        records.append(
            {
                "defense": result["defense"],
                "attack": result["attack"],
                "claim": "EOT samples suffice for the defense's gradient spread",
                "passed": passed,
                "eot": eot,
                "eot_needed": needed,
                "mean_resultant_length": gc["mean_resultant_length"],
                "detail": f"{result['attack']} uses EOT {eot}; {need} (R = {gc['mean_resultant_length']:.3f}): {verdict}",
            }
        )
    return records


def _palette(defenses) -> dict:
    """A colour per defense, by its place in the experiment's list (the report's palette lives in report/,
    which the diagnostics do not import, so a report edit reruns no diagnostic)."""
    import matplotlib

    colours = matplotlib.colormaps["tab10"].colors
    return {name: colours[i % len(colours)] for i, name in enumerate(dict.fromkeys(defenses))}


def measures_figure(table: pd.DataFrame, path: Path) -> Path:
    """Each measure against test robust accuracy, one point (and colour) per defense."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 4, figsize=(14, 6.5), squeeze=False)
    palette = _palette(table["defense"])
    for ax, (column, label) in zip(axes.flat, MEASURES.items()):
        shown = table[table[column].notna()]
        for row in shown.itertuples(index=False):
            ax.scatter(row.test_robust_accuracy, getattr(row, column), color=palette[row.defense], s=40)
            ax.annotate(
                row.defense,
                (row.test_robust_accuracy, getattr(row, column)),
                fontsize=7,
                xytext=(3, 3),
                textcoords="offset points",
            )
        if shown.empty:
            ax.text(0.5, 0.5, "no defense has it", ha="center", va="center", transform=ax.transAxes, color="0.5")
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("test robust accuracy", fontsize=8)
    axes.flat[-1].axis("off")
    fig.tight_layout()
    return _save(fig, path)


def sufficiency_figure(concentration: list[dict], path: Path) -> Path:
    """Cosine of the k-draw mean gradient with the K-draw reference, per defense, with the threshold."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    palette = _palette(gc["defense"] for gc in concentration)
    for gc in concentration:
        curve = gc["sufficiency"]
        ax.plot(
            curve["k"],
            curve["cosine"],
            marker="o",
            color=palette[gc["defense"]],
            label=f"{gc['defense']} (R = {gc['mean_resultant_length']:.2f})",
        )
    if concentration:
        ax.axhline(concentration[0]["cosine_threshold"], color="0.4", linestyle="--", linewidth=1, label="threshold")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("EOT draws k")
    ax.set_ylabel("cosine with the K-draw mean gradient")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=150, bbox_inches="tight")
    plt.close(fig)
    return path


def write_summary(
    measures: list[dict], concentration: list[dict], results: list[dict], out_dir: Path, distortion: list[dict] = ()
) -> dict:
    """measures.csv / .md, measures_vs_robust_accuracy.png, eot_sufficiency.png and eot_checks.json under out_dir."""
    from ..io import write_json, write_text

    out_dir = Path(out_dir)
    table = measures_table(measures, concentration, distortion)
    with atomic_path(out_dir / "measures.csv") as tmp:
        table.to_csv(tmp, index=False)
    write_text(out_dir / "measures.md", _markdown(table))
    measures_figure(table, out_dir / "measures_vs_robust_accuracy.png")
    sufficiency_figure(concentration, out_dir / "eot_sufficiency.png")
    checks = eot_sufficiency_checks(concentration, results)
    write_json(out_dir / "eot_checks.json", {"checks": checks, "passed": all(c["passed"] for c in checks)})
    return {"defenses": len(table), "checks": len(checks), "failed": sum(not c["passed"] for c in checks)}
