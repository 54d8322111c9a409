"""DVC over the workflow: dvc.yaml matches the Snakefile, repro / no-op / partial rerun,
push and pull through a local remote, and Snakemake's HTML report.

One tiny experiment is built once per session (``tiny_dvc_build``, tests/dvc_repo.py) in a
throwaway git repository holding the checkout's files, with the README's command
`dvc exp run -S configfile=config/tiny.yaml -S experiment=tiny`; this module edits a copy.
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import dvc_pipeline  # tools/dvc_pipeline.py (conftest puts tools/ on the path)
import pytest
import yaml
from dvc_repo import STAGES, copy_build, output, run

from conftest import REPO

pytestmark = pytest.mark.workflow


@pytest.fixture(scope="module")
def built(tiny_dvc_build, tmp_path_factory) -> tuple[Path, str]:
    """A copy of the session's tiny DVC build (with its local remote) that this module's tests may edit."""
    repo, log = tiny_dvc_build
    return copy_build(repo, tmp_path_factory.mktemp("dvc-repo") / "repo"), log


def test_dvc_yaml_matches_the_workflow():
    check = run(REPO, sys.executable, "tools/dvc_pipeline.py", "--check", check=False)
    assert check.returncode == 0, output(check)
    assert "up to date" in check.stdout


def test_dvc_yaml_describes_every_snakemake_output(built):
    """After a build, every file Snakemake's summary lists lies in some stage's outs, in its own stage."""
    repo, _ = built
    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    assert list(stages) == STAGES
    outs = {
        stage: [next(iter(out)).replace("${experiment}", "tiny") for out in description["outs"]]
        for stage, description in stages.items()
    }
    summary = run(repo, "snakemake", "--summary", "all", "--configfile", "config/tiny.yaml").stdout
    rows = [line.split("\t") for line in summary.splitlines()[1:] if line.strip()]
    assert len(rows) >= 17
    for path, _, rule, *_ in rows:
        (stage,) = [s for s, rules in dvc_pipeline.STAGES.items() if rule in rules]
        assert any(path == out or path.startswith(out + "/") for out in outs[stage]), (path, stage)
    assert stages["evaluation"]["params"] == [
        {"${configfile}": ["device", "evaluation", "experiment", "finetune", "performance", "seeds"]}
    ]
    # a job's spec keys that are not config sections count by the section they come from (SPEC_SOURCES)
    assert "purifiers" in stages["purifiers"]["params"][0]["${configfile}"]
    assert "src/atop/train/loop.py" in stages["classifiers"]["deps"]
    assert "src/atop/train/loop.py" not in stages["evaluation"]["deps"]
    # a stage depends on the code its jobs run (src/atop/code_closure.py): training's monitors run
    # eot.py, no other attack module; the boundary-distortion diagnostic is the diagnostics' own
    assert "src/atop/attacks/eot.py" in stages["classifiers"]["deps"]
    for stage in ("classifiers", "purifiers", "finetuning"):
        assert "src/atop/attacks/stadv.py" not in stages[stage]["deps"], stage
        assert "src/atop/diagnostics/distortion.py" not in stages[stage]["deps"], stage
    assert "src/atop/attacks/stadv.py" in stages["evaluation"]["deps"]
    assert "src/atop/diagnostics/distortion.py" in stages["diagnostics"]["deps"]


def test_dvc_exp_run_builds_the_tiny_experiment(built):
    repo, log = built
    for stage in ["config", *dvc_pipeline.STAGES]:
        assert f"Running stage '{stage}'" in log
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    assert set(lock) == {"config", *dvc_pipeline.STAGES}
    assert lock["evaluation"]["params"]["config/tiny.yaml"]["evaluation"]["attacks"]["fgsm"]["eps"] == "64/255"
    assert (repo / "models/tiny/purifier_finetuned/seed0/gan-rt2.pt").stat().st_size > 0
    assert len(list((repo / "results/tiny/eval").rglob("*.json"))) == 8  # 4 defenses x 2 attacks
    metrics = run(repo, "dvc", "metrics", "show", "--json").stdout
    assert "results/tiny/report/metrics.json" in metrics and "worst_case" in metrics


def test_second_repro_does_nothing_and_says_so(built):
    repo, _ = built
    again = output(run(repo, "dvc", "repro"))
    assert "Running stage" not in again
    assert "Data and pipelines are up to date." in again
    dry = output(run(repo, "snakemake", "-n", "all", "--configfile", "config/tiny.yaml"))
    assert "Nothing to be done" in dry


def test_html_report_holds_every_figure_its_caption_and_the_config(built):
    repo, _ = built
    run(repo, "snakemake", "--report", "results/tiny/report.html", "--configfile", "config/tiny.yaml")
    html = (repo / "results/tiny/report.html").read_text()
    figures = sorted((repo / "results/tiny").rglob("*.png"))
    assert figures
    for figure in figures:
        assert figure.name in html, f"{figure.name} is not marked report() in its rule"
    assert "Wilson" in html  # the caption in report/robust_accuracy.rst
    assert "mask_rate" in html  # the config
    assert not re.search(r"<script[^>]+src=|<link[^>]+href=\"http", html), "the report must be self-contained"


def test_push_then_pull_into_a_fresh_clone_is_up_to_date(built, tmp_path):
    repo, _ = built
    run(repo, "dvc", "push")
    clone = tmp_path / "clone"
    run(tmp_path, "git", "clone", "-q", str(repo), str(clone))
    run(clone, "dvc", "pull")
    assert (clone / "models/tiny/classifier/seed0.pt").read_bytes() == (
        repo / "models/tiny/classifier/seed0.pt"
    ).read_bytes()
    # DVC does not keep file times; the README's step after a pull tells Snakemake they are current.
    run(clone, "snakemake", "--touch", "--cores", "1", "all", "--configfile", "config/tiny.yaml")
    dry = output(run(clone, "snakemake", "-n", "all", "--configfile", "config/tiny.yaml"))
    assert "Nothing to be done" in dry
    status = output(run(clone, "dvc", "status"))
    assert "Data and pipelines are up to date." in status


@pytest.mark.parametrize(
    "change, message",
    [
        (
            ("experiment: tiny", "experiment: other"),
            "experiment 'other' but config/tiny.yaml declares experiment 'tiny'",
        ),
        (("config/tiny.yaml", "config/my-experiment.yaml"), "configfile config/my-experiment.yaml does not exist"),
        # what `dvc exp run -S +evaluation.attacks.pgd.steps=20` (no file named) writes
        (
            ("experiment: tiny", "experiment: tiny\nevaluation:\n  attacks: {pgd: {steps: 20}}"),
            "unknown key 'evaluation'",
        ),
    ],
    ids=["mismatched-experiment", "missing-config-file", "stray-key"],
)
def test_a_bad_params_file_stops_dvc_before_any_stage_and_changes_nothing(built, change, message):
    """DVC's first stage checks params.yaml: the mistake is named, no Snakemake stage runs, no file
    changes, and with params.yaml put back both front doors say up to date."""
    repo, _ = built
    run(repo, "dvc", "repro")  # whatever earlier tests left stale
    params = repo / "params.yaml"
    original = params.read_text()
    before = _stamps(repo)
    try:
        params.write_text(original.replace(*change))
        failed = run(repo, "dvc", "repro", check=False, timeout=300)
    finally:
        params.write_text(original)
    assert failed.returncode != 0
    assert message in output(failed)
    assert re.findall(r"Running stage '(\w+)'", output(failed)) == ["config"]
    assert not (repo / "results/other").exists()
    assert _stamps(repo) == before
    assert "Data and pipelines are up to date." in output(run(repo, "dvc", "status"))
    assert _planned(repo) == set()


def _stamps(repo: Path) -> dict[str, int]:
    """mtime of every result and checkpoint (logs and benchmarks left out: every job rewrites its own)."""
    return {
        str(path.relative_to(repo)): path.stat().st_mtime_ns
        for folder in ("results/tiny", "models/tiny")
        for path in (repo / folder).rglob("*")
        if path.is_file()
        and path.name != ".gitignore"
        and not {"logs", "benchmarks"} & set(path.relative_to(repo).parts)
    }


def _rewritten(before: dict[str, int], after: dict[str, int]) -> set[str]:
    return {path for path, stamp in after.items() if before.get(path) != stamp}


def _planned(repo: Path) -> set[str]:
    """The rules Snakemake's dry run would run (and how often), from its job table."""
    dry = output(run(repo, "snakemake", "-n", "all", "--configfile", "config/tiny.yaml"))
    return set(re.findall(r"^(\w+)\s+\d+$", dry.split("Job stats:")[-1], flags=re.MULTILINE)) - {"all", "total", "job"}


def test_changing_an_attack_reruns_only_that_attacks_jobs(built):
    """dvc repro after one attack edit reruns exactly what Snakemake plans: that attack's jobs, the checks, the report."""
    repo, _ = built
    config = repo / "config/tiny.yaml"
    config.write_text(config.read_text().replace("      eps: 64/255\n    eot_pgd", "      eps: 48/255\n    eot_pgd"))
    assert _planned(repo) == {"evaluate", "obfuscation_checks", "report"}
    before = _stamps(repo)
    log = output(run(repo, "dvc", "repro"))
    ran = re.findall(r"Running stage '(\w+)'", log)
    # diagnostics reads eval/ (its EOT checks), so DVC runs its stage; Snakemake reruns none of its jobs (below)
    assert ran == ["evaluation", "diagnostics", "report"], log[-3000:]
    for stage in ("data", "classifiers", "purifiers", "finetuning"):
        assert f"Stage '{stage}' didn't change" in log
    assert not re.search(r"rule (prepare_data|train_classifier|pretrain_purifier|finetune_purifier)", log)
    changed = _rewritten(before, _stamps(repo))
    evaluations = {path for path in changed if "/eval/" in path}
    assert evaluations == {f"results/tiny/eval/seed0/{d}/fgsm.json" for d in ("standard", "at", "ap", "atop")}
    # the sweep runs fgsm too, but with eps replaced: its jobs did not change, nor did eot_pgd's
    assert not {path for path in changed if "/sweeps/" in path or path.endswith("eot_pgd.json")}
    assert not {path for path in changed if "/diagnostics/" in path}, "fgsm feeds no diagnostic"
    assert '"eps": 0.18823' in (repo / "results/tiny/eval/seed0/ap/fgsm.json").read_text()
    assert "Nothing to be done" in output(run(repo, "snakemake", "-n", "all", "--configfile", "config/tiny.yaml"))


def test_a_source_edit_reruns_the_jobs_that_run_that_source(built):
    """Both front doors follow the code: a report-only module edit reruns the report, nothing else."""
    repo, _ = built
    module = repo / "src/atop/report/figures.py"
    module.write_text(module.read_text() + "\n# an edit\n")
    assert _planned(repo) == {"report"}
    before = _stamps(repo)
    log = output(run(repo, "dvc", "repro"))
    assert re.findall(r"Running stage '(\w+)'", log) == ["report"], log[-3000:]
    changed = _rewritten(before, _stamps(repo))
    assert changed and all(path.startswith("results/tiny/report/") for path in changed), changed


def test_dvc_exp_run_set_param_reruns_only_that_attacks_jobs(built):
    repo, _ = built
    run(repo, "dvc", "repro")  # whatever earlier tests left stale
    before = _stamps(repo)
    run(repo, "dvc", "exp", "run", "-S", "config/tiny.yaml:evaluation.attacks.eot_pgd.steps=4")
    changed = _rewritten(before, _stamps(repo))
    evaluations = {path for path in changed if "/eval/" in path or "/sweeps/" in path}
    # eot_pgd's results, and the EOT sweep built on eot_pgd (its points inherit the steps); not the eps sweep
    sweep = {f"results/tiny/sweeps/seed0/eot/atop/{point}.json" for point in (0, 1)}
    assert (
        evaluations == {f"results/tiny/eval/seed0/{d}/eot_pgd.json" for d in ("standard", "at", "ap", "atop")} | sweep
    )
    assert not {path for path in changed if path.startswith("models/")}


@pytest.mark.parametrize(
    "params, message",
    [
        ({"configfile": "config/tiny.yaml", "experiment": "digits"}, "declares experiment 'tiny'"),
        ({"configfile": "config/nope.yaml", "experiment": "nope"}, "does not exist"),
        ({"experiment": "tiny"}, "configfile missing"),
        ({"configfile": "config/tiny.yaml", "experiment": "tiny", "seeds": [1]}, "unknown key 'seeds'"),
    ],
)
def test_bad_params_file_is_named(tmp_path, params, message):
    (tmp_path / "config").mkdir()
    shutil.copy(REPO / "config/tiny.yaml", tmp_path / "config/tiny.yaml")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(dvc_pipeline.PipelineError, match=message):
        dvc_pipeline.experiment_configs(tmp_path, dvc_pipeline.load_selection(tmp_path))


def test_outputs_map_to_files_or_their_wildcard_free_folder():
    assert dvc_pipeline.dvc_out("models/{experiment}/c.pt", {"experiment"}) == ("models/${experiment}/c.pt", True)
    assert dvc_pipeline.dvc_out(
        "results/{experiment}/eval/{defense}/{attack}.json", {"experiment", "defense", "attack"}
    ) == (
        "results/${experiment}/eval",
        False,
    )
    with pytest.raises(dvc_pipeline.PipelineError, match="not namespaced"):
        dvc_pipeline.dvc_out("results/shared.csv", set())


def test_a_rule_outside_every_stage_is_an_error():
    with pytest.raises(dvc_pipeline.PipelineError, match="train_robustbench"):
        dvc_pipeline.stage_of_rules(
            {rule: {} for rules in dvc_pipeline.STAGES.values() for rule in rules} | {"train_robustbench": {}}
        )
