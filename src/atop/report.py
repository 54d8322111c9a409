"""Tables, figure and metrics from the per-(defense, attack) result JSONs."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from .io import atomic_path, read_json, write_json, write_text  # noqa: E402

DEFENSE_ORDER = ["standard", "ap", "atop"]


def results_frame(paths: list[str | Path]) -> pd.DataFrame:
    rows = []
    for path in paths:
        r = read_json(path)
        rows.append(
            {
                "defense": r["defense"],
                "attack": r["attack"],
                "method": r["method"],
                "norm": r["norm"],
                "eps": r["eps"],
                "steps": r["steps"],
                "eot": r["eot"],
                "n": r["n"],
                "draws": r["draws"],
                "clean_accuracy": r["clean"]["accuracy"],
                "robust_accuracy": r["robust"]["accuracy"],
                "robust_strict_accuracy": r["robust"]["strict_accuracy"],
                "robust_ci95_low": r["robust"]["ci95"][0],
                "robust_ci95_high": r["robust"]["ci95"][1],
                "wall_seconds": r["wall_seconds"],
                "images_per_second": r["images_per_second"],
            }
        )
    if not rows:
        raise ValueError("no evaluation results to report")
    frame = pd.DataFrame(rows)
    frame["defense"] = pd.Categorical(frame["defense"], _ordered(frame["defense"]), ordered=True)
    return frame.sort_values(["defense", "attack"]).reset_index(drop=True)


def _ordered(names) -> list[str]:
    present = list(dict.fromkeys(names))
    return [d for d in DEFENSE_ORDER if d in present] + sorted(d for d in present if d not in DEFENSE_ORDER)


def pivot_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Defenses x (clean, attacks, worst case), accuracies in percent."""
    clean = frame.groupby("defense", observed=True)["clean_accuracy"].mean().rename("clean")
    robust = frame.pivot(index="defense", columns="attack", values="robust_accuracy")
    table = pd.concat([clean, robust], axis=1)
    table["worst_case"] = robust.min(axis=1)
    return (100 * table).round(2)


def markdown_table(frame: pd.DataFrame) -> str:
    table = pivot_table(frame)
    ci = frame.set_index(["defense", "attack"])[["robust_ci95_low", "robust_ci95_high"]]
    shown = table.astype(object)
    for (defense, attack), (low, high) in ci.iterrows():
        shown.loc[defense, attack] = f"{100 * frame.set_index(['defense', 'attack']).loc[(defense, attack), 'robust_accuracy']:.1f} [{100 * low:.1f}, {100 * high:.1f}]"
    shown["clean"] = table["clean"].map(lambda v: f"{v:.1f}")
    shown["worst_case"] = table["worst_case"].map(lambda v: f"{v:.1f}")
    return shown.to_markdown()


def story(frame: pd.DataFrame) -> list[str]:
    """Plain-words comparison of the defenses under each attack, honest about noise."""
    lines = []
    indexed = frame.set_index(["defense", "attack"])
    defenses = list(frame["defense"].cat.categories)
    for attack in sorted(frame["attack"].unique()):
        parts = []
        for defense in defenses:
            if (defense, attack) in indexed.index:
                row = indexed.loc[(defense, attack)]
                parts.append(f"{defense} {100 * row['robust_accuracy']:.1f} %")
        lines.append(f"- {attack}: " + ", ".join(parts) + ".")
        if {("ap", attack), ("atop", attack)} <= set(indexed.index):
            ap, atop = indexed.loc[("ap", attack)], indexed.loc[("atop", attack)]
            overlap = not (atop["robust_ci95_low"] > ap["robust_ci95_high"] or ap["robust_ci95_low"] > atop["robust_ci95_high"])
            if overlap:
                verdict = "fine-tuning (atop) and no fine-tuning (ap) are within each other's 95 % intervals: no difference can be claimed"
            elif atop["robust_accuracy"] > ap["robust_accuracy"]:
                verdict = "fine-tuning (atop) raises robust accuracy over ap beyond the 95 % intervals"
            else:
                verdict = "fine-tuning (atop) lowers robust accuracy below ap beyond the 95 % intervals"
            lines.append(f"  {verdict}.")
    return lines


def robustness_figure(paths: list[str | Path], frame: pd.DataFrame, out_png: str | Path) -> None:
    """Bars of accuracy per attack per defense; whiskers are 95 % bootstrap intervals over samples."""
    rows = []
    for path in paths:
        r = read_json(path)
        for value in r["per_sample"]["robust_correct_fraction"]:
            rows.append({"defense": r["defense"], "attack": r["attack"], "accuracy": 100 * value})
        for value in r["per_sample"]["clean_correct_fraction"]:
            rows.append({"defense": r["defense"], "attack": "clean", "accuracy": 100 * value})
    samples = pd.DataFrame(rows)
    attacks = ["clean"] + sorted(frame["attack"].unique())
    defenses = list(frame["defense"].cat.categories)
    sns.set_theme(style="whitegrid", context="notebook")
    fig, ax = plt.subplots(figsize=(1.6 + 1.5 * len(attacks), 4.2))
    sns.barplot(
        data=samples, x="attack", y="accuracy", hue="defense", order=attacks, hue_order=defenses,
        errorbar=("ci", 95), seed=0, palette="colorblind", ax=ax, capsize=0.1,
    )
    ax.set(ylim=(0, 100), xlabel="", ylabel="accuracy (%)", title="Clean and robust accuracy per attack")
    ax.legend(title="defense", loc="upper right", fontsize="small")
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=150)
    plt.close(fig)


def metrics(frame: pd.DataFrame) -> dict:
    table = pivot_table(frame) / 100
    return {
        defense: {column: round(float(value), 4) for column, value in row.items() if pd.notna(value)}
        for defense, row in table.iterrows()
    }


def write_report(result_paths: list[str | Path], out_dir: str | Path, experiment: str) -> None:
    out_dir = Path(out_dir)
    frame = results_frame(result_paths)
    with atomic_path(out_dir / "robustness.csv") as tmp:
        frame.to_csv(tmp, index=False)
    n = int(frame["n"].max())
    text = [
        f"# Robustness of the defenses: experiment `{experiment}`",
        "",
        f"Accuracy in % on the same {n} test images for every defense and attack; attacks target the whole "
        "defended model (random transform + purifier + classifier) with exact gradients. Randomized defenses "
        "are scored as the mean over independent draws; brackets are 95 % Wilson intervals.",
        "",
        markdown_table(frame),
        "",
        "## Reading",
        "",
        *story(frame),
        "",
    ]
    write_text(out_dir / "robustness.md", "\n".join(text))
    robustness_figure(result_paths, frame, out_dir / "robust_accuracy.png")
    write_json(out_dir / "metrics.json", metrics(frame))
