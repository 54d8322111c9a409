"""Per-job CPU accounting for the whole-DAG benchmarks (workflow.py, dag_startup.py).

Snakemake's benchmark TSVs sample a job's process tree once a second at first, then
every 30 s, so their ``cpu_time`` misses up to 30 s at the end of a long job. Here every
``python -m atop`` job records its own exact figures instead: a ``sitecustomize.py`` put
on PYTHONPATH (the rules prepend src/ to it, so jobs find it) registers an atexit hook
that appends the job's argv, CPU seconds (``getrusage``: all threads plus reaped
children), wall seconds and torch's thread count to a JSON-lines file. Optionally it
first imports a list of modules, so a run can restore eager imports (dag_startup.py).

From the records, ``two_core_estimate`` replays the DAG on an idle 2-core machine:
each job takes ``cpu / threads`` seconds (CPU seconds count, not the loaded wall time;
a 2-thread job is assumed to use both cores fully, which flatters training jobs), and
a job starts when the jobs whose outputs it reads are done and enough cores are free,
longest-waiting first. It is an estimate, not a measurement.
"""

from __future__ import annotations

import heapq
import itertools
import json
from pathlib import Path

SHIM = '''"""Written by benchmarks/jobcpu.py: records each `python -m atop` job's CPU seconds."""
import sys

_argv = list(getattr(sys, "orig_argv", []))
if _argv[1:3] == ["-m", "atop"]:
    import atexit
    import importlib
    import json
    import resource
    import time

    _began = time.time()

    def _record():
        own = resource.getrusage(resource.RUSAGE_SELF)
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        torch = sys.modules.get("torch")
        record = {{
            "argv": _argv[3:],
            "cpu": own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime,
            "wall": time.time() - _began,
            "threads": torch.get_num_threads() if torch is not None else 1,
            "max_rss_mb": own.ru_maxrss / 1024,
        }}
        with open({records!r}, "a") as handle:
            handle.write(json.dumps(record) + "\\n")

    atexit.register(_record)
    for _name in {eager!r}:
        importlib.import_module(_name)
'''


def write_shim(folder: Path, records: Path, eager: tuple[str, ...] = ()) -> Path:
    """A folder holding the accounting sitecustomize.py; put it on PYTHONPATH."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(SHIM.format(records=str(records), eager=list(eager)))
    return folder


def read_records(records: Path) -> list[dict]:
    return [json.loads(line) for line in records.read_text().splitlines() if line.strip()]


def job_name(record: dict) -> str:
    """The command and its main output, e.g. ``evaluate eval/ap/pgd.json``."""
    argv = record["argv"]
    outputs = _outputs(argv)
    out = outputs[0].split("/", 2)[-1] if outputs else ""
    return f"{argv[0]} {out}".strip()


def _outputs(argv: list[str]) -> list[str]:
    return [value for flag, value in itertools.pairwise(argv) if flag.startswith("--out")]


def replicate_seeds(records: list[dict], seeds: list[int], measured: int = 0) -> list[dict]:
    """The records of a one-seed run as a run of ``seeds`` would have them (for ``two_core_estimate``).

    A job writing under ``/seed<measured>`` (training, evaluation, diagnostics) runs once per seed with
    the same CPU seconds; a shared job (data, report) runs once and reads every seed's outputs.
    The report's own work grows with the results it reads; its measured seconds are kept.
    """
    tag = f"/seed{measured}"
    replicated = []
    for record in records:
        if any(tag in path for path in _outputs(record["argv"])):
            for seed in seeds:
                replicated.append({**record, "argv": [t.replace(tag, f"/seed{seed}") for t in record["argv"]]})
        else:
            extra = [t.replace(tag, f"/seed{seed}") for seed in seeds if seed != measured for t in record["argv"][1:]]
            replicated.append({**record, "argv": record["argv"] + [t for t in extra if t not in record["argv"]]})
    return replicated


def two_core_estimate(records: list[dict], cores: int = 2) -> tuple[float, float]:
    """(estimated idle wall seconds on ``cores`` cores, critical path seconds).

    Dependencies come from the jobs' own arguments: a job depends on every job one of
    whose ``--out*`` paths (or a file under it) appears among its arguments.
    """
    producer = {path: index for index, record in enumerate(records) for path in _outputs(record["argv"])}

    def made_by(token: str) -> int | None:  # the job writing this path or the folder holding it
        while token:
            if token in producer:
                return producer[token]
            token = token.rpartition("/")[0]
        return None

    needs = [
        {made_by(token) for token in record["argv"][1:] if made_by(token) not in (None, index)}
        for index, record in enumerate(records)
    ]
    threads = [min(max(1, int(record["threads"])), cores) for record in records]
    duration = [record["cpu"] / width for record, width in zip(records, threads)]

    finish_path: dict[int, float] = {}

    def path_to(index: int) -> float:  # longest chain of durations ending with this job
        if index not in finish_path:
            finish_path[index] = duration[index] + max((path_to(n) for n in needs[index]), default=0.0)
        return finish_path[index]

    critical = max((path_to(i) for i in range(len(records))), default=0.0)
    users = [[j for j in range(len(records)) if i in needs[j]] for i in range(len(records))]
    tail: dict[int, float] = {}

    def tail_from(index: int) -> float:  # longest chain of durations starting with this job
        if index not in tail:
            tail[index] = duration[index] + max((tail_from(u) for u in users[index]), default=0.0)
        return tail[index]

    done_at: dict[int, float] = {}
    running: list[tuple[float, int]] = []  # (end time, job)
    waiting = set(range(len(records)))
    now, free = 0.0, cores
    while waiting or running:
        ready = sorted(
            (i for i in waiting if all(n in done_at for n in needs[i])),
            key=lambda i: (-tail_from(i), i),  # the longest remaining chain first, as a scheduler would
        )
        for index in ready:
            if threads[index] <= free:
                free -= threads[index]
                waiting.discard(index)
                heapq.heappush(running, (now + duration[index], index))
        if not running:
            raise RuntimeError("jobs wait on outputs no job makes (a cycle in the records?)")
        now, index = heapq.heappop(running)
        done_at[index] = now
        free += threads[index]
    return now, critical
