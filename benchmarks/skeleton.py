"""Walking-skeleton targets, measured in one run and printed side by side.

Runs the default experiment (config/config.yaml) from scratch in a temporary
copy of the workflow, so existing results are never touched, then prints:
the whole-DAG wall time (target <= 300 s on 2 cores), per-stage times and
peak memory from Snakemake's benchmark files, the `snakemake -n all` no-op
time after the run (target <= 5 s), and the headline accuracies.

    python benchmarks/skeleton.py [--cores 8] [--keep DIR]
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
FILES = ("Snakefile", "rules", "config", "profiles", "report", "environment.yml", "src")


def copy_workflow(target: Path) -> None:
    for name in FILES:
        source = REPO / name
        (shutil.copytree if source.is_dir() else shutil.copy2)(source, target / name)


def timed(args: list[str], cwd: Path) -> float:
    began = time.perf_counter()
    run = subprocess.run(args, cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - began
    if run.returncode != 0:
        sys.exit(f"{' '.join(args)} failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cores", default="8")
    parser.add_argument("--keep", type=Path, help="run in this (new) folder and keep it")
    args = parser.parse_args()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="atop-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    copy_workflow(folder)
    print(f"workflow copy: {folder}  cores: {args.cores}  cpus: {os.cpu_count()}", flush=True)

    wall = timed([SNAKEMAKE, "--cores", args.cores, "all"], folder)
    noop = [timed([SNAKEMAKE, "-n", "all"], folder) for _ in range(3)]

    experiment = "digits"
    bench = folder / "results" / experiment / "benchmarks"
    print(f"\n{'stage':<34}{'seconds':>10}{'max RSS MB':>12}")
    for tsv in sorted(bench.rglob("*.tsv")):
        with tsv.open() as handle:
            row = next(csv.DictReader(handle, delimiter="\t"))
        print(f"{str(tsv.relative_to(bench).with_suffix('')):<34}{float(row['s']):>10.1f}{float(row['max_rss']):>12.0f}")

    print(f"\n{'target':<44}{'measured':>10}{'limit':>8}")
    print(f"{'whole DAG wall time (s)':<44}{wall:>10.1f}{300:>8}")
    print(f"{'snakemake -n all after the run (s, best of 3)':<44}{min(noop):>10.2f}{5:>8}")

    metrics = json.loads((folder / "results" / experiment / "report" / "metrics.json").read_text())
    attacks = sorted({k for m in metrics.values() for k in m} - {"clean", "worst_case"})
    print(f"\n{'defense':<10}{'clean':>8}" + "".join(f"{a:>10}" for a in attacks))
    for defense, row in metrics.items():
        print(f"{defense:<10}{100 * row['clean']:>8.1f}" + "".join(f"{100 * row[a]:>10.1f}" for a in attacks))
    if not args.keep:
        shutil.rmtree(folder)


if __name__ == "__main__":
    main()
