"""How long DVC takes to say there is nothing to do (target: a second `dvc repro` within 10 s).

Builds an experiment through DVC in a throwaway git repository holding this
checkout's files (existing results are never touched), then times a second
`dvc repro`, `dvc status` and `snakemake -n all`, best of three each.

    python benchmarks/dvc_noop.py                 # the default experiment (about 3 min on 2 cores)
    python benchmarks/dvc_noop.py --experiment tiny --configfile config/tiny.yaml
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ENV = {
    **os.environ,
    "PATH": os.pathsep.join([str(BIN), os.environ.get("PATH", "")]),
    "DVC_NO_ANALYTICS": "1",
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@example.org",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@example.org",
}


def timed(args: list[str], cwd: Path, expect: str | None = None) -> float:
    began = time.perf_counter()
    run = subprocess.run(args, cwd=cwd, env=ENV, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - began
    if run.returncode != 0 or (expect and expect not in run.stdout + run.stderr):
        sys.exit(f"{' '.join(args)} failed or did not say {expect!r}:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}")
    return elapsed


def copy_checkout(target: Path) -> None:
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    for name in filter(None, listed):
        if (REPO / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, target / name)
    for args in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "bench"]):
        subprocess.run(args, cwd=target, env=ENV, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configfile", default="config/config.yaml")
    parser.add_argument("--experiment", default="digits")
    parser.add_argument("--keep", type=Path, help="build in this (new) folder and keep it")
    args = parser.parse_args()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="atop-dvc-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    copy_checkout(folder)
    print(f"repository copy: {folder}  cpus: {os.cpu_count()}", flush=True)

    selection = ["-S", f"configfile={args.configfile}", "-S", f"experiment={args.experiment}"]
    build = timed(["dvc", "exp", "run", *selection], folder)
    repro = [timed(["dvc", "repro"], folder, "Data and pipelines are up to date.") for _ in range(3)]
    status = [timed(["dvc", "status"], folder, "Data and pipelines are up to date.") for _ in range(3)]
    dry = [
        timed(["snakemake", "-n", "all", "--configfile", args.configfile], folder, "Nothing to be done")
        for _ in range(3)
    ]

    print(f"\n{'measure (' + args.experiment + ')':<46}{'seconds':>10}{'limit':>8}")
    print(f"{'dvc exp run, from scratch':<46}{build:>10.1f}{'':>8}")
    print(f"{'second dvc repro, nothing changed (best of 3)':<46}{min(repro):>10.2f}{10:>8}")
    print(f"{'dvc status (best of 3)':<46}{min(status):>10.2f}{'':>8}")
    print(f"{'snakemake -n all (best of 3)':<46}{min(dry):>10.2f}{'':>8}")
    if not args.keep:
        shutil.rmtree(folder)


if __name__ == "__main__":
    main()
