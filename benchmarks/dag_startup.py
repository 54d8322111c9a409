"""The whole default DAG with today's lean job start-up beside the same DAG with eager imports restored.

"before" is not an old revision (the DAG itself changed since the pre-lean commit
f321baf: diagnostics, Square, EOT on every gradient attack): it is today's workflow
and code with every `python -m atop` job importing, at interpreter start, what
f321baf's CLI imported before every command to name its error types (torch,
torchattacks and the purifier training module with its dependencies, atop.data,
atop.io, atop.train.loop). A sitecustomize.py on PYTHONPATH does it (benchmarks/jobcpu.py),
and records every job's CPU seconds in both runs. Runs alternate (after, before;
then before, after; ...), each from scratch in its own temporary copy.

Printed side by side: wall time, total CPU seconds of Snakemake and every job (getrusage
of the reaped process tree: exact, and far less sensitive to other users' load than
wall time), the jobs' own CPU seconds, the estimated idle 2-core wall time
(jobcpu.two_core_estimate) and the after / before ratios.

    python benchmarks/dag_startup.py [--cores 2] [--repeats 1] [--keep DIR]
    python benchmarks/dag_startup.py --summarize DIR   # the table again, from a kept folder
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from jobcpu import read_records, two_core_estimate, write_shim
from workflow import SNAKEMAKE, copy_workflow

# What f321baf's `atop.cli.main` imported before every command (its _expected_errors).
EAGER = ("torch", "torchattacks", "atop.data", "atop.io", "atop.train.loop", "atop.train.purifier")


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_dag(folder: Path, cores: str, eager: tuple[str, ...]) -> dict:
    """Run the default DAG from scratch in ``folder``; its wall, CPU and per-job records."""
    folder.mkdir(parents=True)
    copy_workflow(folder)
    records = folder / "job_cpu.jsonl"
    shim = write_shim(folder / ".jobcpu", records, eager)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(shim), os.getenv("PYTHONPATH")]))}
    cpu_before, began = children_cpu(), time.perf_counter()
    run = subprocess.run(
        [SNAKEMAKE, "--cores", cores, "all"], cwd=folder, env=env, capture_output=True, text=True, check=False
    )
    wall, cpu = time.perf_counter() - began, children_cpu() - cpu_before
    if run.returncode != 0:
        sys.exit(f"snakemake failed in {folder}:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}")
    result = {"wall": wall, "cpu": cpu, **job_figures(read_records(records))}
    (folder / "run.json").write_text(json.dumps(result))
    return result


def job_figures(jobs: list[dict]) -> dict:
    """The jobs' CPU seconds, split by thread count: a one-thread job's CPU seconds hardly depend on
    other users' load, a multi-threaded one's grow with it (its threads spin while they wait for a core)."""
    estimate, critical = two_core_estimate(jobs)
    return {
        "jobs_cpu": sum(job["cpu"] for job in jobs),
        "one_thread_cpu": sum(job["cpu"] for job in jobs if job["threads"] == 1),
        "multi_thread_cpu": sum(job["cpu"] for job in jobs if job["threads"] > 1),
        "jobs": len(jobs),
        "estimate": estimate,
        "critical": critical,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cores", default="2")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--keep", type=Path, help="run in this (new) folder and keep it")
    parser.add_argument("--summarize", type=Path, help="print the table of a kept folder's runs again (no run)")
    args = parser.parse_args()
    arms = {"after": (), "before": EAGER}
    runs: dict[str, list[dict]] = {label: [] for label in arms}
    if args.summarize:
        for run in sorted(args.summarize.glob("*-*/run.json")):
            kept = {**json.loads(run.read_text()), **job_figures(read_records(run.parent / "job_cpu.jsonl"))}
            runs[run.parent.name.split("-")[0]].append(kept)
        print_table(runs)
        return
    folder = args.keep or Path(tempfile.mkdtemp(prefix="atop-dag-startup-"))
    print(f"cores: {args.cores}  cpus: {os.cpu_count()}  load average at start: {os.getloadavg()}", flush=True)
    for repeat in range(args.repeats):
        order = list(arms) if repeat % 2 == 0 else list(reversed(arms))  # alternate who goes first
        for label in order:
            result = run_dag(folder / f"{label}-{repeat}", args.cores, arms[label])
            runs[label].append(result)
            print(f"{label} #{repeat}: " + ", ".join(f"{k} {v:.1f}" for k, v in result.items()), flush=True)
    print(f"load average at end: {os.getloadavg()}")
    print_table(runs)
    if not args.keep:
        shutil.rmtree(folder)


def print_table(runs: dict[str, list[dict]]) -> None:
    rows = [
        ("wall s", "wall"),
        ("CPU s, Snakemake + all jobs", "cpu"),
        ("CPU s, the atop jobs", "jobs_cpu"),
        ("  of which one-thread jobs", "one_thread_cpu"),
        ("  of which multi-thread jobs", "multi_thread_cpu"),
        ("atop jobs", "jobs"),
        ("estimated idle 2-core wall s", "estimate"),
        ("critical path s", "critical"),
    ]
    print(f"\nmedian of {len(runs['after'])} run(s) each")
    print(f"{'':<32}{'before':>12}{'after':>12}{'after / before':>16}")
    for title, key in rows:
        before = statistics.median(run[key] for run in runs["before"])
        after = statistics.median(run[key] for run in runs["after"])
        ratio = f"{after / before:>16.2f}" if before else f"{'-':>16}"  # e.g. no multi-thread job
        print(f"{title:<32}{before:>12.1f}{after:>12.1f}{ratio}")


if __name__ == "__main__":
    main()
