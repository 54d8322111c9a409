"""Shared fixtures: a copy of the workflow in a temporary folder and a tiny config."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
# src/ too: jobs import atop from the workflow's own src/ (rules/common.smk), not from
# whichever checkout the shared virtual environment was installed from.
WORKFLOW_FILES = ("Snakefile", "rules", "config", "profiles", "report", "environment.yml", "src", "examples")
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
# The repository's tools (tools/dvc_pipeline.py) are scripts outside the package; tests import them.
sys.path.insert(0, str(REPO / "tools"))


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Tests use tiny tensors: intra-op threads only add overhead (and stall on a loaded 2-core
    machine). Jobs the workflow tests start get their threads from Snakemake instead."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_config() -> dict:
    """config/tiny.yaml: a few hundred digits, one short epoch per stage, strong budgets."""
    return yaml.safe_load((REPO / "config" / "tiny.yaml").read_text())


def copy_workflow(folder: Path) -> Path:
    """The workflow's files copied into ``folder``, as a user's checkout would have them."""
    for name in WORKFLOW_FILES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, folder / name)
        else:
            shutil.copy2(source, folder / name)
    return folder


@pytest.fixture
def workflow_dir(tmp_path: Path) -> Path:
    return copy_workflow(tmp_path)


def write_config(folder: Path, config: dict, name: str = "test.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def run_snakemake(folder: Path, *args: str, timeout: int = 900, env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**(env or os.environ), "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [SNAKEMAKE, *args], cwd=folder, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def _shared_build(tmp_path_factory, name: str, build) -> tuple[Path, str]:
    """``build(repo)`` (returns its log) once per test run in ``<root>/<name>/repo``; under ``pytest -n``
    the workers share it: the first to ask builds it in the run's common temporary folder, under a
    lock; the others wait. (repository, log)."""
    import fcntl

    worker = os.environ.get("PYTEST_XDIST_WORKER")
    root = tmp_path_factory.getbasetemp() if worker is None else tmp_path_factory.getbasetemp().parent
    folder, log = root / name, root / f"{name}.log"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if folder.exists() and not log.exists():
            raise RuntimeError(f"the build in {folder} failed in another worker (its error is reported there)")
        if not log.exists():
            (folder / "repo").mkdir(parents=True)
            log.write_text(build(folder / "repo"))
    return folder / "repo", log.read_text()


@pytest.fixture(scope="session")
def front_door_build(tmp_path_factory) -> tuple[Path, str]:
    """The tiny experiment (a variant: tests/dvc_repo.py) built by `snakemake all`, then `dvc repro`
    run over it, committed: (repository, JSON of both logs). Never edit it: copy it."""
    from dvc_repo import build_front_door, checkout_copy

    return _shared_build(tmp_path_factory, "front-door-build", lambda repo: build_front_door(checkout_copy(repo)))


@pytest.fixture(scope="session")
def tiny_dvc_build(tmp_path_factory) -> tuple[Path, str]:
    """The tiny experiment built once per test run through DVC in a throwaway repository of the
    checkout (tests/dvc_repo.py), with a local DVC remote beside it; (repository, build output).
    Never edit it: copy it (``dvc_repo.copy_build``)."""
    from dvc_repo import build_tiny, checkout_copy

    return _shared_build(
        tmp_path_factory, "tiny-dvc-build", lambda repo: build_tiny(checkout_copy(repo), repo.parent / "remote")
    )


# The slowest tests (seconds on 2 cores, `--durations`), started first: under `pytest -n 2
# --maxschedchunk 1` (make test) each worker holds two tests and takes the next when one ends, so
# long runs started late would leave the other worker idle at the end, and short tests fill the
# last minutes instead. The longest (CIFAR-10, ~60 % of one worker's time) is paired with a short
# test, so no second long run waits behind it on the same worker.
SLOWEST_FIRST = (
    "test_presets_run.py::test_shrunk_preset_runs_end_to_end[cifar10]",
    "test_dvc.py::test_dvc_yaml_matches_the_workflow",  # short: held behind CIFAR-10
    "test_slurm.py::test_tiny_workflow_through_slurm",  # waits on SLURM's polls: overlaps well
    "test_presets_run.py::test_shrunk_preset_runs_end_to_end[imagenette]",  # two attacks: CIFAR-10 runs the rest
    "test_front_doors.py::test_dvc_repro_after_snakemake_all_runs_no_job",  # builds the shared front-door run
    "test_workflow.py::test_tiny_workflow_end_to_end",
    "test_custom_defenses.py::test_worked_example_runs_end_to_end",
    "test_reliability.py::test_failed_rerun_of_each_stage_leaves_the_finished_outputs_as_they_were",  # shared run
    "test_reliability.py::test_interrupted_workflow_reruns_to_the_same_numbers",
    "test_presets_run.py::test_shrunk_preset_runs_end_to_end[cifar100]",
)


def pytest_collection_modifyitems(config, items):
    for item in items:  # a test on a built workflow is a workflow test (make test-fast leaves it out)
        if "workflow_dir" in getattr(item, "fixturenames", ()) and not item.get_closest_marker("workflow"):
            item.add_marker(pytest.mark.workflow)

    def rank(item) -> tuple[int, int]:
        for position, name in enumerate(SLOWEST_FIRST):
            if item.nodeid.endswith(name):
                return (0, position)
        return (1 if item.get_closest_marker("workflow") else 2, 0)

    items.sort(key=rank)  # stable: each file's own order is kept within a rank
