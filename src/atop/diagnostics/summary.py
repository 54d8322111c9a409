"""Across defenses: the diagnostics table, its figures, and the EOT-sufficiency checks."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")

import pandas as pd

from ..io import atomic_path
from ..stats import aligned, detectable_difference, sign_test
from .catalog import BY_FOLDER, PER_DEFENSE

# Table column -> its label, for the columns the figure plots against test robust accuracy.
MEASURES = {column.name: column.label for d in PER_DEFENSE for column in d.columns if column.label}
# The diagnostic whose per-image gradients explain the EOT-sufficiency checks.
CONCENTRATION = "gradient_concentration"


def group_by_diagnostic(paths) -> dict[str, list[dict]]:
    """Per-defense diagnostic JSONs, by the diagnostic whose output folder holds each
    (results/<experiment>/diagnostics/seed<N>/<folder>/<defense>.json)."""
    from ..io import read_json

    grouped: dict[str, list[dict]] = {}
    for path in paths:
        diagnostic = BY_FOLDER.get(Path(path).parent.name)
        if diagnostic is None:
            known = ", ".join(sorted(BY_FOLDER))
            raise ValueError(f"{path}: not in a per-defense diagnostic's folder ({known})")
        grouped.setdefault(diagnostic.name, []).append(read_json(path))
    return grouped


def measures_table(per_defense: dict[str, list[dict]]) -> pd.DataFrame:
    """One row per defense (in the order the diagnostics list them), one column per catalog ``Column``
    (diagnostics/catalog.py): robust accuracies, every measure, R, the EOT the defense needs and (fine-tuned
    defenses) the decision-boundary distortion; empty where a diagnostic did not cover the defense."""
    rows: dict[str, dict] = {}
    for diagnostic in PER_DEFENSE:
        for record in per_defense.get(diagnostic.name, []):
            row = rows.setdefault(record["defense"], {"defense": record["defense"]})
            row |= {column.name: column.read(record) for column in diagnostic.columns}
    columns = ["defense", *(column.name for d in PER_DEFENSE for column in d.columns)]
    return pd.DataFrame(list(rows.values()), columns=columns)


def _markdown(table: pd.DataFrame) -> str:
    shown = table.astype(object).where(table.notna(), "-")
    header = "| " + " | ".join(shown.columns) + " |\n|" + "---|" * len(shown.columns) + "\n"
    body = "".join(
        "| " + " | ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row) + " |\n"
        for row in shown.itertuples(index=False)
    )
    return header + body + "\n" + "\n".join(gap_lines(table)) + "\n"


def gap_lines(table: pd.DataFrame) -> list[str]:
    """What the robust generalization gaps can say: a gap whose 95 % interval contains 0 is not evidence
    of a gap (Newcombe's interval; gap_low / gap_high in the table)."""
    lines = []
    for row in table.itertuples(index=False):
        if row.gap_low is None or pd.isna(row.gap_low):
            continue
        span = f"{100 * row.robust_generalization_gap:+.1f} pp, 95 % interval [{100 * row.gap_low:+.1f}, {100 * row.gap_high:+.1f}]"
        if row.gap_low <= 0 <= row.gap_high:
            verdict = f"cannot be told from no gap on {row.images_per_split} images per split"
        else:
            verdict = "a gap" if row.gap_low > 0 else "test above train"
        lines.append(f"- {row.defense}: robust generalization gap {span}: {verdict}.")
    return lines


EOT_ALPHA = 0.05  # one-sided: does a larger EOT lower robust accuracy?
EOT_CLAIM = "raising EOT does not lower robust accuracy (EOT samples suffice)"


def _per_image(result: dict) -> tuple[list, list]:
    fractions = result.get("per_sample", {}).get("robust_correct_fraction")
    return result.get("sample_indices") or [], fractions or []


def _cosine_text(gc: dict | None, eot: int) -> str:
    """What the measured gradient-cosine curve says at the evaluation's EOT: it explains, it does not decide."""
    if gc is None:
        return "no gradient-concentration diagnostic"
    curve = gc["sufficiency"]
    at = dict(zip(curve["k"], curve["cosine"]))
    below = [k for k in curve["k"] if k <= eot]
    cosine = f"cosine of an EOT-{below[-1]} mean gradient to the expected one {at[below[-1]]:.2f}" if below else ""
    threshold = gc["cosine_threshold"]
    needed = gc.get("eot_needed")
    need = (
        f"{threshold:g} reached at k = {needed}"
        if needed is not None
        else f"{threshold:g} not reached by k = {gc.get('eot_needed_above') or curve['k'][-1]} (more draws needed to tell)"
    )
    return f"{cosine} (median over images; {need})".lstrip()


def eot_sufficiency_checks(concentration: list[dict], results: list[dict]) -> list[dict]:
    """Check records (checks.py's shape): for every EOT evaluation of a randomized defense, does a larger EOT
    lower robust accuracy on the same images?

    The evaluation's EOT e is sufficient when the EOT sweep's largest point above e does not score
    significantly lower than e on the same images (one-sided exact sign test at 5 % on per-image
    robust fractions; e's own sweep point when the sweep has it, else the evaluation restricted to
    the sweep's images). The measured gradient-cosine curve is quoted to explain, never to decide
    (a cosine of 0.9 is not tied to what sign-based PGD achieves). Without a sweep above e the
    check records no outcome (``passed: None``): the report counts that as doubt, not a pass.
    """
    by_defense = {c["defense"]: c for c in concentration}
    evaluations = [r for r in results if not r.get("sweep")]
    points = [r for r in results if r.get("sweep") and r["sweep"].get("param") == "eot"]
    records = []
    for result in evaluations:
        if not result.get("randomized") or result.get("gradient") != "full" or "eot" not in result.get("params", {}):
            continue
        defense, attack, eot = result["defense"], result["attack"], int(result["params"]["eot"])
        sweep = [p for p in points if p["defense"] == defense and p["sweep"].get("base_attack") == attack]
        larger = [p for p in sweep if p["sweep"]["value"] > eot]
        record = {"defense": defense, "attack": attack, "claim": EOT_CLAIM, "eot": eot}
        explain = _cosine_text(by_defense.get(defense), eot)
        if not larger:
            records.append(
                {
                    **record,
                    "passed": None,
                    "detail": f"{attack} uses EOT {eot}; not tested: no EOT sweep above {eot} on {defense} "
                    f"(evaluation.sweeps, param eot); {explain}",
                }
            )
            continue
        top = max(larger, key=lambda p: p["sweep"]["value"])
        same = [p for p in sweep if p["sweep"]["value"] == eot]
        base = same[0] if same else result
        indices, at_eot, at_top = aligned(*_per_image(base), *_per_image(top))
        if not indices:
            records.append({**record, "passed": None, "detail": f"{attack}: no per-image outcomes to compare"})
            continue
        test = sign_test(at_eot, at_top, alternative="greater")
        mean_eot, mean_top = sum(at_eot) / len(at_eot), sum(at_top) / len(at_top)
        passed = test.p_value >= EOT_ALPHA
        larger_eot = int(top["sweep"]["value"])
        differences = [a - b for a, b in zip(at_eot, at_top, strict=True)]
        size = detectable_difference(differences, 2 * EOT_ALPHA)  # one-sided at 5 %
        verdict = "enough" if passed else "EOT TOO SMALL: more samples lower robust accuracy"
        records.append(
            {
                **record,
                "passed": passed,
                "larger_eot": larger_eot,
                "n": len(indices),
                "accuracy": [round(mean_eot, 4), round(mean_top, 4)],
                "p_value": test.p_value,
                "detectable_drop": round(size, 4),
                "eot_needed": by_defense.get(defense, {}).get("eot_needed"),
                "detail": (
                    f"{attack} uses EOT {eot}: robust accuracy {mean_eot:.3f} at EOT {eot} vs {mean_top:.3f} at EOT "
                    f"{larger_eot} on the same {len(indices)} images (sign test {test.a_better}:{test.b_better}, "
                    f"one-sided p = {test.p_value:.3g}; a drop of {100 * size:.0f} pp or more would be detected "
                    f"with 80 % power): {verdict}; {explain}"
                ),
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

    rows = -(-len(MEASURES) // 4)
    fig, axes = plt.subplots(rows, 4, figsize=(14, 3.25 * rows), squeeze=False)
    palette = _palette(table["defense"])
    for ax, (column, label) in zip(axes.flat, MEASURES.items()):
        shown = table[table[column].notna()]
        for row in shown.itertuples(index=False):
            ax.scatter(row.test_robust_accuracy, getattr(row, column), color=palette[row.defense], s=40)
            if column == "robust_generalization_gap" and row.gap_low is not None and not pd.isna(row.gap_low):
                value = row.robust_generalization_gap  # the 95 % interval: on a few images it spans the axis
                ax.errorbar(
                    row.test_robust_accuracy,
                    value,
                    yerr=[[value - row.gap_low], [row.gap_high - value]],
                    color=palette[row.defense],
                    capsize=3,
                )
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
    for ax in axes.flat[len(MEASURES) :]:
        ax.axis("off")
    fig.tight_layout()
    return _save(fig, path)


def sufficiency_figure(concentration: list[dict], path: Path, results: list[dict] = ()) -> Path:
    """Left, what decides: per defense, robust accuracy at each point of the EOT sweep (the check's paired
    test compares the evaluation's EOT with the largest). Right, what explains: the median over images of
    the k-draw mean gradient's cosine to the expected gradient (from disjoint k-draw means), with the
    threshold."""
    import matplotlib.pyplot as plt

    fig, (decides, explains) = plt.subplots(1, 2, figsize=(10, 3.6))
    sweeps: dict[str, list[tuple[int, float]]] = {}
    for r in results:
        if r.get("sweep", {}).get("param") == "eot":
            fractions = _per_image(r)[1]
            if fractions:
                sweeps.setdefault(r["defense"], []).append((int(r["sweep"]["value"]), sum(fractions) / len(fractions)))
    palette = _palette([*sweeps, *(gc["defense"] for gc in concentration)])
    for defense, points in sweeps.items():
        k, accuracy = zip(*sorted(points))
        decides.plot(k, accuracy, marker="o", color=palette[defense], label=defense)
    if not sweeps:
        decides.text(0.5, 0.5, "no EOT sweep: not decided", ha="center", va="center", transform=decides.transAxes)
    decides.set_xscale("log", base=2)
    decides.set_xlabel("EOT samples of the sweep's attack")
    decides.set_ylabel("robust accuracy (decides)")
    decides.set_ylim(0, 1.02)
    if sweeps:
        decides.legend(fontsize=7)
    for gc in concentration:
        curve = gc["sufficiency"]
        explains.plot(
            curve["k"],
            curve["cosine"],
            marker="o",
            color=palette[gc["defense"]],
            label=f"{gc['defense']} (R = {gc['mean_resultant_length']:.2f})",
        )
    if concentration:
        explains.axhline(
            concentration[0]["cosine_threshold"], color="0.4", linestyle="--", linewidth=1, label="threshold"
        )
        explains.legend(fontsize=7)
    explains.set_xscale("log", base=2)
    explains.set_xlabel("EOT draws k")
    explains.set_ylabel("cosine of a k-draw mean to the expected gradient (explains)", fontsize=8)
    explains.set_ylim(0, 1.02)
    fig.tight_layout()
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=150, bbox_inches="tight")
    plt.close(fig)
    return path


def write_summary(per_defense: dict[str, list[dict]], results: list[dict], out_dir: Path) -> dict:
    """measures.csv / .md, measures_vs_robust_accuracy.png, eot_sufficiency.png and eot_checks.json under
    out_dir, from the per-defense diagnostics' JSONs (by diagnostic name) and the evaluation results."""
    from ..io import write_json, write_text

    out_dir = Path(out_dir)
    concentration = per_defense.get(CONCENTRATION, [])
    table = measures_table(per_defense)
    with atomic_path(out_dir / "measures.csv") as tmp:
        table.to_csv(tmp, index=False)
    write_text(out_dir / "measures.md", _markdown(table))
    measures_figure(table, out_dir / "measures_vs_robust_accuracy.png")
    sufficiency_figure(concentration, out_dir / "eot_sufficiency.png", results)
    checks = eot_sufficiency_checks(concentration, results)
    write_json(out_dir / "eot_checks.json", {"checks": checks, "passed": all(c["passed"] is True for c in checks)})
    return {"defenses": len(table), "checks": len(checks), "failed": sum(c["passed"] is False for c in checks)}
