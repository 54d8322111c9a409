"""The paper presets: each is a complete, valid config whose dry run lists the paper's DAG."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from atop.protocols import JOB_PROTOCOLS

from conftest import REPO, run_snakemake

PRESETS = sorted((REPO / "config" / "paper").glob("*.yaml"))
# Hand-derived job counts: (defenses, evaluate jobs, sweep points, purifier variants).
#   cifar10: 14 defenses (standard, at, ap/atop x {gan, ae} x {rt1, rt2, rt3}); 5 attacks on all 14,
#            aa_standard on 2, aa_rand, square, bpda_eot, pgd_classifier and cw_classifier on 12
#            -> 70 + 2 + 60 = 132; sweeps 6 x 4 + 5 + 5 = 34.
#   cifar100: 6 defenses (standard, at, ap/atop x {gan, ae} x rt2) -> 5 x 6 + 2 + 3 x 4 = 44; sweeps 34.
#   imagenette: 8 defenses (standard, at, ap/atop x gan x {rt1, rt2, rt3}) -> 3 x 8 + 2 + 5 x 6 = 56;
#            sweeps 6 x 2 = 12.
HAND_COUNTS = {"cifar10": (14, 132, 34, 6), "cifar100": (6, 44, 34, 2), "imagenette": (8, 56, 12, 3)}


def _selected(attack: dict, defenses: list[str]) -> list[str]:
    """The defenses an attack runs on: its ``defenses`` entries are names or kinds (ap, atop, ...)."""
    chosen = attack.get("defenses")
    return [d for d in defenses if chosen is None or d in chosen or d.split("-")[0] in chosen]


def expected_jobs(config: dict) -> dict[str, int]:
    evaluation = config["evaluation"]
    defenses = evaluation["defenses"]
    variants = {d.split("-", 1)[1] for d in defenses if d.split("-")[0] in ("ap", "atop")}
    finetuned = {d.split("-", 1)[1] for d in defenses if d.split("-")[0] == "atop"}
    return {
        "prepare_data": 1,
        "train_classifier": 1,
        "train_adversarial": int("at" in defenses),
        "pretrain_purifier": len(variants),
        "finetune_purifier": len(finetuned),
        "evaluate": sum(len(_selected(a, defenses)) for a in evaluation["attacks"].values()),
        "evaluate_sweep": sum(
            len(s["values"]) * len(s.get("defenses", defenses)) for s in evaluation.get("sweeps", {}).values()
        ),
        "obfuscation_checks": 1,
        "report": 1,
        "gradient_concentration": len(defenses),
        "robustness_measures": len(defenses),
        "boundary_distortion": sum(d.split("-")[0] == "atop" for d in defenses),
        "diagnostic_pictures": 1,
        "diagnostics_summary": 1,
        "evaluate_protocol": len((evaluation.get("protocols") or {}).get("defenses", []))
        * len((evaluation.get("protocols") or {}).get("jobs", JOB_PROTOCOLS)),
        "all": 1,
    }


def job_stats(output: str) -> dict[str, int]:
    table = output[output.index("Job stats:") :].split("\n\n")[0]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.MULTILINE) if m[1] != "total"}


def test_every_dataset_has_a_preset():
    assert [p.stem for p in PRESETS] == sorted(HAND_COUNTS)


@pytest.mark.workflow
@pytest.mark.parametrize("preset", PRESETS, ids=[p.stem for p in PRESETS])
def test_preset_dry_run_lists_the_paper_dag(workflow_dir: Path, preset: Path):
    config = yaml.safe_load(preset.read_text())
    run = run_snakemake(workflow_dir, "-n", "-p", "all", "--configfile", f"config/paper/{preset.name}", timeout=300)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-3000:]
    stats = job_stats(output)
    expected = {rule: n for rule, n in expected_jobs(config).items() if n}
    assert stats == expected

    n_defenses, n_evaluate, n_sweep, n_variants = HAND_COUNTS[preset.stem]
    assert len(config["evaluation"]["defenses"]) == n_defenses
    assert (stats["evaluate"], stats["evaluate_sweep"], stats["pretrain_purifier"]) == (n_evaluate, n_sweep, n_variants)
    assert stats["finetune_purifier"] == n_variants and stats["train_adversarial"] == 1

    experiment = config["experiment"]
    models = f"models/{experiment}"
    (seed,) = config["seeds"]
    # `at` is scored with the adversarially trained classifier; AToP fine-tunes against the standard one.
    assert f"--defense at --attack aa_standard --classifier {models}/classifier_adversarial/seed{seed}.pt" in output
    assert f"--defense standard --attack aa_standard --classifier {models}/classifier/seed{seed}.pt" in output
    assert re.search(
        rf"--classifier {models}/classifier/seed{seed}\.pt --purifier {models}/purifier_pretrained/seed{seed}/gan-rt2\.pt",
        output,
    )
    assert f"--defense atop-gan-rt2 --attack eot_pgd --classifier {models}/classifier/seed{seed}.pt" in output
    assert f"--purifier {models}/purifier_finetuned/seed{seed}/gan-rt2.pt" in output
    assert "--defense ap-gan-rt2 --attack aa_standard" not in output, "aa_standard is for deterministic defenses"
    assert "--defense standard --attack aa_rand" not in output
    assert "--defense standard --attack bpda_eot" not in output
    # the paper's budgets and fine-tuning recipe reach the jobs
    assert '"attack": {"alpha": 0.007, "eot": 20, "eps": "8/255", "method": "eot_pgd", "steps": 200}' in output
    finetune = config["finetune"]
    assert f'"ce_start_epoch": {finetune["ce_start_epoch"]}' in output
    assert f'"ce_weight": {finetune["ce_weight"]}' in output and '"epoch_images": 5000' in output
    assert '"n_samples": 512' in output
    # an evaluation job's params hold only what affects it: no lists of defenses, attacks or sweeps
    specs = re.findall(r"atop evaluate --spec '([^']*)'", output)
    assert len(specs) == n_evaluate + n_sweep + stats.get("evaluate_protocol", 0)  # the protocols run evaluate too
    assert not any('"defenses"' in spec or '"attacks"' in spec or '"sweeps"' in spec for spec in specs)
    assert not (workflow_dir / "results").exists(), "a dry run writes nothing"
