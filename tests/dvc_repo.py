"""A throwaway git + DVC repository holding the checkout's files, and the tiny experiment built in it.

The build (about two minutes on 2 cores) is made once per test session (``tiny_dvc_build`` in
conftest.py) and never changed: tests/test_dvc.py edits a copy of it, and the rerun-parity
benchmark's smoke test starts from it (``--built``) instead of building its own.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# The README's command: `dvc exp run -S configfile=config/tiny.yaml -S experiment=tiny`
TINY = ("-S", "configfile=config/tiny.yaml", "-S", "experiment=tiny")
# dvc.yaml's stages, in the order DVC runs them (tools/dvc_pipeline.py)
STAGES = ["config", "data", "classifiers", "purifiers", "finetuning", "evaluation", "diagnostics", "report"]


def dvc_env() -> dict:
    return {
        **os.environ,
        "PATH": os.pathsep.join([str(BIN), os.environ.get("PATH", "")]),
        "PYTHONPATH": str(REPO / "src"),
        "DVC_NO_ANALYTICS": "1",
        "GIT_AUTHOR_NAME": "test",
        "GIT_AUTHOR_EMAIL": "test@example.org",
        "GIT_COMMITTER_NAME": "test",
        "GIT_COMMITTER_EMAIL": "test@example.org",
    }


def run(
    folder: Path, *args: str, timeout: int = 900, check: bool = True, env: dict | None = None
) -> subprocess.CompletedProcess:
    """``args`` in ``folder`` with DVC's test environment (plus ``env``); asserts success unless ``check=False``."""
    done = subprocess.run(
        args, cwd=folder, env={**dvc_env(), **(env or {})}, capture_output=True, text=True, timeout=timeout, check=False
    )
    if check:
        assert done.returncode == 0, f"{' '.join(args)}\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return done


def output(done: subprocess.CompletedProcess) -> str:
    return done.stdout + done.stderr


def checkout_copy(target: Path) -> Path:
    """The checkout's tracked and not-ignored files as a fresh git repository with one commit."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    run(target, "git", "init", "-q")
    run(target, "git", "add", "-A")
    run(target, "git", "commit", "-qm", "checkout")
    return target


def commit_all(folder: Path, message: str) -> None:
    run(folder, "git", "add", "-A")
    run(folder, "git", "commit", "-qm", message)


def build_tiny(repo: Path, remote: Path) -> str:
    """Build the tiny experiment in ``repo`` (a ``checkout_copy``) with the README's command, add
    ``remote`` as the default DVC remote and commit; returns the build's output."""
    built = run(repo, "dvc", "exp", "run", *TINY)
    run(repo, "dvc", "remote", "add", "-d", "local", str(remote))
    commit_all(repo, "tiny experiment")
    return output(built)


def copy_build(source: Path, target: Path) -> Path:
    """A copy of a built repository that stays up to date: file times kept, links kept as links."""
    shutil.copytree(source, target, symlinks=True)
    return target


# tests/test_front_doors.py: the tiny config with a test split large enough that dataset.pt is over
# Snakemake's default checksum limit (1 MB, as the default experiment's 5.5 MB), and an attack with
# a module of its own (bpda_eot, attacks/bpda.py) on atop.
FRONT_DOOR_CONFIG = "config/tiny.yaml"
FRONT_DOOR_FILES = ("results/tiny/data/dataset.pt", "models/tiny/classifier/seed0.pt")


def front_door_config() -> dict:
    config = yaml.safe_load((REPO / FRONT_DOOR_CONFIG).read_text())
    # every digit: 200 training images as in tiny, the rest in the test split (40 are attacked)
    config["data"].update(limit=None, test_size=1797 - 200 - config["data"]["val_size"])
    config["evaluation"]["attacks"]["bpda_eot"] = {
        "method": "bpda_eot",
        "defenses": ["atop"],
        "eps": "64/255",
        "alpha": "16/255",
        "steps": 2,
        "eot": 1,
    }
    return config


def build_front_door(repo: Path) -> str:
    """In ``repo`` (a ``checkout_copy``): the front-door config built by `snakemake all` (as `make run`,
    every job's imports logged by PYTHONPROFILEIMPORTTIME), then `dvc repro`, committed. Returns
    JSON: both outputs and the file times of FRONT_DOOR_FILES between the two."""
    (repo / FRONT_DOOR_CONFIG).write_text(yaml.safe_dump(front_door_config(), sort_keys=False))
    (repo / "params.yaml").write_text(yaml.safe_dump({"configfile": FRONT_DOOR_CONFIG, "experiment": "tiny"}))
    commit_all(repo, "front-door experiment")
    snakemake_all = ("snakemake", "--cores", "2", "all", "--configfile", FRONT_DOOR_CONFIG)
    built = output(run(repo, *snakemake_all, env={"PYTHONPROFILEIMPORTTIME": "1"}))
    stamps = {path: (repo / path).stat().st_mtime_ns for path in FRONT_DOOR_FILES}
    repro = output(run(repo, "dvc", "repro"))
    commit_all(repo, "dvc repro after snakemake all")
    return json.dumps({"built": built, "repro": repro, "stamps": stamps})
