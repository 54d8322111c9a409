"""A throwaway git + DVC repository holding the checkout's files, and the tiny experiment built in it.

The build (about two minutes on 2 cores) is made once per test session (``tiny_dvc_build`` in
conftest.py) and never changed: tests/test_dvc.py edits a copy of it, and the rerun-parity
benchmark's smoke test starts from it (``--built``) instead of building its own.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# The README's command: `dvc exp run -S configfile=config/tiny.yaml -S experiment=tiny`
TINY = ("-S", "configfile=config/tiny.yaml", "-S", "experiment=tiny")


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


def run(folder: Path, *args: str, timeout: int = 900, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(args, cwd=folder, env=dvc_env(), capture_output=True, text=True, timeout=timeout, check=False)
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
