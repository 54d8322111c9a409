"""One result, two front doors: `snakemake all` then `dvc repro` reruns nothing, and a source
edit reruns only the jobs whose code it touches, under both.

The path a user takes: a clone, the experiment built with plain Snakemake (`make run`), then
`dvc repro`. One build per test run (``front_door_build``, shared by pytest's workers), of the
tiny config in a throwaway git + DVC copy of the checkout, changed in two ways: a test split
large enough that ``dataset.pt`` is over 1 MB (Snakemake's default limit for comparing an
input's content: the default experiment's 5.5 MB ``dataset.pt`` met the issue, the tiny one,
0.24 MB, does not), and one attack, ``bpda_eot`` on ``atop``, that runs a module of its own
(``attacks/bpda.py``). The build runs with ``PYTHONPROFILEIMPORTTIME`` on, so every job's
log lists the modules it imported: the code closures are checked against them. Tests that
run anything work on a copy of the build.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from pathlib import Path

import pytest
from dvc_repo import FRONT_DOOR_CONFIG, FRONT_DOOR_FILES, STAGES, copy_build, output, run

from atop.code_closure import command_closure

pytestmark = pytest.mark.workflow

CONFIG = FRONT_DOOR_CONFIG
TRAINING = {"prepare_data", "train_classifier", "train_adversarial", "pretrain_purifier", "finetune_purifier"}


@pytest.fixture(scope="module")
def made(front_door_build) -> dict:
    """The session's build (conftest.py, tests/dvc_repo.py): the repository and both logs."""
    repo, log = front_door_build
    return {"repo": repo, **json.loads(log)}


DATASET, CLASSIFIER = FRONT_DOOR_FILES


def jobs(log: str) -> list[str]:
    """The rules of the jobs a Snakemake run (or each DVC stage's Snakemake) started."""
    return [rule for rule in re.findall(r"^(?:local)?rule (\w+):$", log, flags=re.MULTILINE) if rule != "all"]


def ran(log: str) -> set[str]:
    return {rule for rule in jobs(log) if not rule.startswith("stage_")}


def planned(repo: Path) -> set[str]:
    """The rules `snakemake -n all` would run."""
    dry = output(run(repo, "snakemake", "-n", "all", "--configfile", CONFIG))
    if "Nothing to be done" in dry:
        return set()
    table = dry.split("Job stats:")[-1]
    return set(re.findall(r"^(\w+)\s+\d+$", table, flags=re.MULTILINE)) - {"all", "total", "job"}


def stale_stages(repo: Path) -> set[str]:
    status = output(run(repo, "dvc", "status"))
    return set(re.findall(r"^(\w+):$", status, flags=re.MULTILINE))


def test_dvc_repro_after_snakemake_all_runs_no_job(made, tmp_path):
    repro = made["repro"]
    repo = copy_build(made["repo"], tmp_path / "repo")
    assert (repo / DATASET).stat().st_size > 1_000_000, "the test needs a dataset over Snakemake's default 1 MB"
    assert {"prepare_data", "train_adversarial", "boundary_distortion", "report"} <= set(jobs(made["built"]))
    # DVC ran every stage (it had no lock) and each stage's Snakemake found its jobs done
    # (the config stage checks params.yaml and the config file it names, with no Snakemake)
    assert re.findall(r"Running stage '(\w+)'", repro) == STAGES
    assert jobs(repro) == [], repro[-4000:]
    assert repro.count("Nothing to be done") == 7
    # ... although DVC relinked the data stage's outputs from its cache with new times: the
    # dataset is now newer than the checkpoints trained on it, with the same bytes
    dataset_time = (repo / DATASET).stat().st_mtime_ns
    assert dataset_time > made["stamps"][CLASSIFIER] >= made["stamps"][DATASET], "DVC kept the dataset's time"
    assert "Data and pipelines are up to date." in output(run(repo, "dvc", "status"))
    assert planned(repo) == set()


def test_a_new_time_reruns_nothing_new_bytes_rerun_the_readers(made, tmp_path):
    """Snakemake compares the content of an input newer than its outputs: a retrained checkpoint
    (new bytes) reruns what reads it, the same bytes with a new time (a DVC checkout) rerun nothing."""
    repo = copy_build(made["repo"], tmp_path / "repo")
    checkpoint = repo / CLASSIFIER
    original = checkpoint.read_bytes()

    def replace(content: bytes) -> None:  # a new file: never write through a link into DVC's cache
        temporary = checkpoint.with_suffix(".tmp")
        temporary.write_bytes(content)
        os.replace(temporary, checkpoint)

    replace((repo / "models/tiny/classifier_adversarial/seed0.pt").read_bytes())
    readers = planned(repo)
    assert {"finetune_purifier", "evaluate", "evaluate_sweep", "robustness_measures", "report"} <= readers
    assert not readers & {"prepare_data", "train_classifier", "train_adversarial", "pretrain_purifier"}
    assert "classifiers" in stale_stages(repo)
    replace(original)
    assert checkpoint.stat().st_mtime_ns > (repo / "results/tiny/report/metrics.json").stat().st_mtime_ns
    assert planned(repo) == set()
    assert "Data and pipelines are up to date." in output(run(repo, "dvc", "status"))


# A source edit, the rules `snakemake all` reruns and those `dvc repro` reruns. They differ in one
# way: Snakemake reruns, in the same run, every job downstream of one it reruns; DVC compares a
# stage's outputs before the next stage, whose Snakemake then compares the bytes its jobs read.
# The distortion diagnostic's rerun rewrites the EOT checks with the same bytes: the report,
# their only reader here, reruns under `snakemake all` and not under `dvc repro`.
RUN_EDITS = {
    "src/atop/attacks/stadv.py": (set(), set()),  # no attack of this config runs StAdv
    "src/atop/attacks/bpda.py": ({"evaluate", "obfuscation_checks", "report"},) * 2,
    "src/atop/diagnostics/distortion.py": (
        {"boundary_distortion", "diagnostics_summary", "report"},
        {"boundary_distortion", "diagnostics_summary"},
    ),
}
# For edits only planned (their runs retrain): the DVC stages each makes stale.
PLANNED_EDITS = {
    # the overfitting monitors of AT and of fine-tuning build FGSM and PGD from eot.py
    "src/atop/attacks/eot.py": (
        {"train_adversarial", "finetune_purifier", "evaluate"},
        {"classifiers", "finetuning", "evaluation", "diagnostics"},
    ),
    "src/atop/train/monitor.py": (
        {"train_adversarial", "finetune_purifier", "report"},
        {"classifiers", "finetuning"},
    ),
}


def _edit(path: Path) -> None:
    path.write_text(path.read_text() + "\n# an edit\n")


def test_a_source_edit_reruns_the_jobs_that_run_it_through_either_front_door(made, tmp_path):
    """`snakemake -n all` plans the rules that run the edited module and their readers; `dvc repro`
    then runs those jobs (less any whose inputs came out byte-identical) and no others, never
    training; afterwards both front doors are up to date again."""
    repo = copy_build(made["repo"], tmp_path / "repo")
    for module, (expected, stages) in PLANNED_EDITS.items():
        original = (repo / module).read_text()
        _edit(repo / module)
        plan = planned(repo)
        assert expected <= plan, (module, plan)
        assert not plan & {"prepare_data", "train_classifier", "pretrain_purifier"}, (module, plan)
        assert stale_stages(repo) == stages, module
        (repo / module).write_text(original)
    for module, (expected, by_dvc) in RUN_EDITS.items():
        _edit(repo / module)
        assert planned(repo) == expected, module
        log = output(run(repo, "dvc", "repro"))
        assert ran(log) == by_dvc, (module, log[-3000:])
        assert not ran(log) & TRAINING
        for stage in ("data", "classifiers", "purifiers", "finetuning"):
            assert f"Stage '{stage}' didn't change" in log, (module, stage)
        assert planned(repo) == set(), module
    assert "Data and pipelines are up to date." in output(run(repo, "dvc", "status"))


def test_every_job_imported_only_code_its_closure_hashes(made):
    """Each job's imports (its log, PYTHONPROFILEIMPORTTIME) lie in the files its `code` param hashes."""
    repo, built = made["repo"], made["built"]
    commands = re.findall(r"^Shell command: (python -m atop .*)$", built, flags=re.MULTILINE)
    assert len(commands) >= 30
    seen = set()
    for line in commands:
        words = shlex.split(line)
        command, log = words[3], words[words.index(">") + 1]
        spec = json.loads(words[words.index("--spec") + 1]) if "--spec" in words else {}
        attacks = (spec["attack"]["method"],) if isinstance(spec.get("attack"), dict) else None
        imported = re.findall(
            r"^import time:\s+\d+ \|\s+\d+ \|\s+(atop(?:\.\w+)*)$", (repo / log).read_text(), re.MULTILINE
        )
        assert imported, f"{log}: no import times (PYTHONPROFILEIMPORTTIME)"
        files = {_source(repo, name) for name in imported}
        closure = set(command_closure(repo, command, attacks))
        assert files <= closure, f"{command} {attacks}: imported {sorted(files - closure)} outside its closure"
        seen.add((command, attacks))
    assert ("evaluate", ("bpda_eot",)) in seen and ("boundary-distortion", None) in seen


def _source(repo: Path, module: str) -> str:
    base = Path("src", *module.split("."))
    path = base.with_suffix(".py") if (repo / base.with_suffix(".py")).is_file() else base / "__init__.py"
    return str(path)
