"""SLURM overhead: the tiny workflow run locally and through profiles/slurm, side by side.

Copies the workflow into two temporary folders, runs config/tiny.yaml with
`snakemake --cores 2` (local), then stands up the one-node localhost SLURM of
tests/slurm/ and runs the same DAG with `--profile profiles/slurm` plus the test
overrides (tests/slurm/local_cluster.py), and prints both wall times and their
ratio (target: SLURM <= 3x local). Needs root (it installs/starts slurm-wlm and munge).

    python benchmarks/slurm_overhead.py [--cores 2]
"""

from __future__ import annotations

import argparse
import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "slurm"))
from local_cluster import LocalCluster, write_override_profile

SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
FILES = ("Snakefile", "rules", "config", "profiles", "report", "environment.yml", "src")
TARGET = 3.0


def copy_workflow(target: Path) -> Path:
    target.mkdir(parents=True)
    for name in FILES:
        source = REPO / name
        (shutil.copytree if source.is_dir() else shutil.copy2)(source, target / name)
    return target


def timed(args: list[str], cwd: Path, env: dict | None = None) -> float:
    began = time.perf_counter()
    run = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - began
    if run.returncode != 0:
        sys.exit(f"{' '.join(args)} failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cores", default="2", help="cores of the local run (the test node has 2 real ones)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="atop-slurm-bench-"))
    tiny = ["all", "--configfile", "config/tiny.yaml"]
    try:
        local = timed([SNAKEMAKE, "--cores", args.cores, *tiny], copy_workflow(root / "local"))
        print(f"local run:  {local:7.1f} s  (snakemake --cores {args.cores})", flush=True)
        with open("/tmp/atop-local-slurm.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            cluster = LocalCluster(root / "cluster").start()
            try:
                folder = copy_workflow(root / "slurm")
                write_override_profile(folder / "slurm-local")
                profile = ["--profile", "profiles/slurm", "--workflow-profile", "slurm-local"]
                slurm = timed([SNAKEMAKE, *profile, *tiny], folder, env=cluster.env)
                jobs = len(cluster.jobs())
            finally:
                cluster.stop()
        print(f"SLURM run:  {slurm:7.1f} s  ({jobs} sbatch jobs, status polling from 1 s)")
        print(f"ratio:      {slurm / local:7.2f} x  (target <= {TARGET:.0f} x)  cpus: {os.cpu_count()}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
