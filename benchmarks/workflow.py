"""Whole-workflow targets, measured in one run and printed side by side.

Runs the default experiment (config/config.yaml) from scratch in a temporary
copy of the workflow, so existing results are never touched, then prints:
the whole-DAG wall time (target <= 300 s on 2 cores), per-stage times and
peak memory (max RSS) from Snakemake's benchmark files, the no-op times after
the run of `snakemake -n all` and `dvc status` (target <= 5 s each), and the
headline accuracies. For `dvc status` the copy becomes a git + DVC repository
(`git init`, `dvc init`) with this checkout's dvc.yaml, and `dvc commit`
records the finished run in dvc.lock first, as a user's `dvc repro` would.

    python benchmarks/workflow.py [--cores 2] [--keep DIR]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
DVC = str(Path(sys.executable).with_name("dvc"))
FILES = ("Snakefile", "rules", "config", "profiles", "report", "environment.yml", "src", "dvc.yaml", "params.yaml")


def copy_workflow(target: Path) -> None:
    for name in FILES:
        source = REPO / name
        (shutil.copytree if source.is_dir() else shutil.copy2)(source, target / name)


def timed(args: list[str], cwd: Path) -> tuple[float, str]:
    """Wall seconds of a command that must succeed, and its output."""
    began = time.perf_counter()
    run = subprocess.run(args, cwd=cwd, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - began
    if run.returncode != 0:
        sys.exit(f"{' '.join(args)} failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}")
    return elapsed, run.stdout + run.stderr


def dvc_status_seconds(folder: Path) -> tuple[list[float], str]:
    """Make ``folder`` a git + DVC repository recording the finished run; time `dvc status` thrice."""
    for command in (
        ["git", "init", "-q"],
        [DVC, "init", "-q"],
        [DVC, "config", "core.analytics", "false"],
        [DVC, "commit", "-f", "-q"],
    ):
        timed(command, folder)
    runs = [timed([DVC, "status"], folder) for _ in range(3)]
    return [seconds for seconds, _ in runs], runs[-1][1].strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cores", default="2", help="the 5-minute target is for 2 cores")
    parser.add_argument("--keep", type=Path, help="run in this (new) folder and keep it")
    args = parser.parse_args()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="atop-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    copy_workflow(folder)
    print(f"workflow copy: {folder}  cores: {args.cores}  cpus: {os.cpu_count()}", flush=True)

    wall, _ = timed([SNAKEMAKE, "--cores", args.cores, "all"], folder)
    noop_runs = [timed([SNAKEMAKE, "-n", "all"], folder) for _ in range(3)]
    noop = [seconds for seconds, _ in noop_runs]
    dvc_status, dvc_says = dvc_status_seconds(folder)

    experiment = "digits"
    bench = folder / "results" / experiment / "benchmarks"
    print(f"\n{'stage':<34}{'seconds':>10}{'max RSS MB':>12}")
    for tsv in sorted(bench.rglob("*.tsv")):
        with tsv.open() as handle:
            row = next(csv.DictReader(handle, delimiter="\t"))
        print(f"{tsv.relative_to(bench).with_suffix('')!s:<34}{float(row['s']):>10.1f}{float(row['max_rss']):>12.0f}")

    print(f"\n{'target':<44}{'measured':>10}{'limit':>8}")
    print(f"{'whole DAG wall time (s)':<44}{wall:>10.1f}{300:>8}")
    print(f"{'snakemake -n all after the run (s, median of 3)':<44}{sorted(noop)[1]:>10.2f}{5:>8}")
    print(f"{'dvc status after the run (s, median of 3)':<44}{sorted(dvc_status)[1]:>10.2f}{5:>8}")
    print(f"snakemake -n all says: {noop_runs[-1][1].strip().splitlines()[-1]}")
    print(f"dvc status says: {dvc_says}")

    metrics = json.loads((folder / "results" / experiment / "report" / "metrics.json").read_text())["defenses"]
    attacks = sorted({k for m in metrics.values() for k in m} - {"clean", "worst_case"})
    print(f"\n{'defense':<10}{'clean':>8}" + "".join(f"{a:>20}" for a in attacks))
    for defense, row in metrics.items():
        print(f"{defense:<10}{100 * row['clean']:>8.1f}" + "".join(f"{100 * row[a]:>20.1f}" for a in attacks))
    if not args.keep:
        shutil.rmtree(folder)


if __name__ == "__main__":
    main()
