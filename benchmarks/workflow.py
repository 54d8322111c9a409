"""Whole-workflow targets, measured in one run and printed side by side.

Runs the default experiment (config/config.yaml) from scratch in a temporary
copy of the workflow, so existing results are never touched, then prints:
every job's exact CPU seconds, loaded wall seconds and peak memory (max RSS),
recorded by the job itself (benchmarks/jobcpu.py: Snakemake's benchmark TSVs
sample CPU time only every 30 s), the total CPU seconds of Snakemake and all
jobs, the whole-DAG wall time, the estimated wall time on an idle 2-core machine
(jobcpu.two_core_estimate replays the DAG from the CPU seconds, so it holds on a
shared machine, where the wall time does not; the target is the measured wall time
on 2 idle cores, <= 600 s), the no-op times
after the run of `snakemake -n all` and `dvc status` (target <= 5 s each), and
the headline accuracies. For `dvc status` the copy becomes a git + DVC repository
(`git init`, `dvc init`) with this checkout's dvc.yaml, and `dvc repro` records the
finished run in dvc.lock first, as a user's would after `make run` (its config stage
writes the selection record the other stages read; no Snakemake job reruns).

    python benchmarks/workflow.py [--cores 2] [--keep DIR] [--configfile FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from jobcpu import job_name, read_records, replicate_seeds, two_core_estimate, write_shim

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
WALL_LIMIT_S = 600  # `make run` on 2 idle cores (DEVELOPERS.md)
DVC = str(Path(sys.executable).with_name("dvc"))
FILES = ("Snakefile", "rules", "config", "profiles", "report", "environment.yml", "src", "dvc.yaml", "params.yaml")


def copy_workflow(target: Path) -> None:
    for name in FILES:
        source = REPO / name
        (shutil.copytree if source.is_dir() else shutil.copy2)(source, target / name)


def timed(args: list[str], cwd: Path, env: dict | None = None) -> tuple[float, str]:
    """Wall seconds of a command that must succeed, and its output."""
    began = time.perf_counter()
    run = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - began
    if run.returncode != 0:
        sys.exit(f"{' '.join(args)} failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}")
    return elapsed, run.stdout + run.stderr


def dvc_status_seconds(folder: Path) -> tuple[list[float], str]:
    """Make ``folder`` a git + DVC repository recording the finished run; time `dvc status` thrice."""
    # dvc.yaml's stages run `python` and `snakemake`: this environment's, as `make` puts them first
    # and this copy's atop (its config stage imports atop.config, whichever checkout the environment installed)
    env = {
        **os.environ,
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.getenv("PATH", "")]),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(folder / "src"), os.getenv("PYTHONPATH")])),
    }
    for command in (
        ["git", "init", "-q"],
        [DVC, "init", "-q"],
        [DVC, "config", "core.analytics", "false"],
        [DVC, "repro"],
    ):
        timed(command, folder, env)
    runs = [timed([DVC, "status"], folder) for _ in range(3)]
    return [seconds for seconds, _ in runs], runs[-1][1].strip()


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cores", default="2", help="the 600 s target is for 2 idle cores")
    parser.add_argument("--keep", type=Path, help="run in this (new) folder and keep it")
    parser.add_argument("--configfile", help="another experiment (default: the workflow's config/config.yaml)")
    args = parser.parse_args()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="atop-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    copy_workflow(folder)
    config = yaml.safe_load(Path(args.configfile or folder / "config" / "config.yaml").read_text())
    # after the target: --configfile takes every argument up to the next option
    extra = ["--configfile", str(Path(args.configfile).resolve())] if args.configfile else []
    records = folder / "job_cpu.jsonl"
    shim = write_shim(folder / ".jobcpu", records)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(shim), os.getenv("PYTHONPATH")]))}
    print(f"workflow copy: {folder}  cores: {args.cores}  cpus: {os.cpu_count()}", flush=True)
    print(f"load average before: {os.getloadavg()}", flush=True)

    cpu_before = children_cpu()
    wall, _ = timed([SNAKEMAKE, "--cores", args.cores, "all", *extra], folder, env)
    cpu = children_cpu() - cpu_before
    load_after = os.getloadavg()
    noop_runs = [timed([SNAKEMAKE, "-n", "all", *extra], folder) for _ in range(3)]
    noop = [seconds for seconds, _ in noop_runs]
    # dvc.yaml and params.yaml describe the default experiment: another one is not timed under DVC
    dvc_status, dvc_says = dvc_status_seconds(folder) if not args.configfile else ([float("nan")] * 3, "not run")

    jobs = read_records(records)
    print(f"\n{'job':<52}{'CPU s':>8}{'wall s':>8}{'threads':>8}{'max RSS MB':>12}")
    for job in sorted(jobs, key=job_name):
        name = job_name(job)
        print(f"{name:<52}{job['cpu']:>8.1f}{job['wall']:>8.1f}{job['threads']:>8}{job['max_rss_mb']:>12.0f}")
    jobs_cpu = sum(job["cpu"] for job in jobs)
    estimate, critical = two_core_estimate(jobs)

    print(f"\nload average after the run: {load_after} (wall times are inflated by other users' load)")
    print(f"jobs: {len(jobs)}; their CPU s: {jobs_cpu:.1f}; Snakemake + all jobs CPU s: {cpu:.1f}")
    print(f"CPU s / 2: {cpu / 2:.1f}; critical path s: {critical:.1f}")
    print(f"\n{'target':<52}{'measured':>10}{'limit':>8}")
    print(f"{'estimated idle 2-core wall time (s)':<52}{estimate:>10.1f}{'':>8}")
    if config.get("seeds", [0]) == [0]:  # the same jobs once per seed: config/digits-seeds.yaml's DAG
        three, _ = two_core_estimate(replicate_seeds(jobs, [0, 1, 2]))
        print(f"{'the same with seeds 0, 1, 2 (digits-seeds.yaml), est. (s)':<52}{three:>10.1f}{'':>8}")
    print(f"{'whole DAG wall time, this (possibly loaded) run (s)':<52}{wall:>10.1f}{WALL_LIMIT_S:>8}")
    print(f"{'snakemake -n all after the run (s, median of 3)':<52}{sorted(noop)[1]:>10.2f}{5:>8}")
    print(f"{'dvc status after the run (s, median of 3)':<52}{sorted(dvc_status)[1]:>10.2f}{5:>8}")
    says = noop_runs[-1][1].strip().splitlines()
    print(f"snakemake -n all says: {next((line for line in says if 'Nothing to be done' in line), says[-1])}")
    print(f"dvc status says: {dvc_says}")

    experiment = config["experiment"]
    metrics = json.loads((folder / "results" / experiment / "report" / "metrics.json").read_text())["defenses"]
    # draw-mean accuracy per attack (metrics.json also holds _all_draws and worst-case keys)
    attacks = sorted(
        {k for m in metrics.values() for k in m if not k.endswith("all_draws") and not k.startswith("worst_case")}
        - {"clean"}
    )
    print(f"\n{'defense':<10}{'clean':>8}" + "".join(f"{a:>20}" for a in attacks))
    for defense, row in metrics.items():
        cells = "".join(f"{100 * row[a]:>20.1f}" if a in row else f"{'-':>20}" for a in attacks)  # not run on it
        print(f"{defense:<10}{100 * row['clean']:>8.1f}{cells}")
    if not args.keep:
        shutil.rmtree(folder)


if __name__ == "__main__":
    main()
