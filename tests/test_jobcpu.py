"""benchmarks/jobcpu.py: the per-job CPU records and the idle 2-core replay the DAG benchmarks report."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))

from jobcpu import job_name, read_records, replicate_seeds, two_core_estimate, write_shim


def job(command: str, out: str, cpu: float, reads: tuple[str, ...] = (), threads: int = 1) -> dict:
    argv = [command, "--spec", '{"a": "results/x/y"}', *(token for path in reads for token in ("--data", path))]
    return {"argv": [*argv, "--out", out], "cpu": cpu, "wall": cpu, "threads": threads, "max_rss_mb": 1.0}


def test_independent_one_thread_jobs_share_two_cores():
    records = [job("evaluate", f"r/e/{i}.json", 10.0) for i in range(4)]
    assert two_core_estimate(records) == (pytest.approx(20.0), pytest.approx(10.0))


def test_a_chain_runs_in_order_and_two_thread_jobs_take_both_cores():
    records = [
        job("prepare-data", "r/data.pt", 2.0),
        job("train-classifier", "r/clf.pt", 20.0, reads=("r/data.pt",), threads=2),  # 10 s on 2 cores
        job("evaluate", "r/e/a.json", 6.0, reads=("r/clf.pt", "r/data.pt")),
        job("evaluate", "r/e/b.json", 6.0, reads=("r/clf.pt",)),
        job("report", "r/report", 1.0, reads=("r/e/a.json", "r/e/b.json")),
        job("summary", "r/summary.json", 1.0, reads=("r/report/metrics.json",)),  # a file under a folder output
    ]
    estimate, critical = two_core_estimate(records)
    assert critical == pytest.approx(2 + 10 + 6 + 1 + 1)
    assert estimate == pytest.approx(2 + 10 + 6 + 1 + 1)  # the two evaluations run side by side


def test_the_longest_remaining_chain_starts_first():
    # Two cores, three ready jobs: the 5 s job a 10 s job waits on starts first (15 s); in the
    # order given (short1 and short2 first) the chain would start at 5 s and end at 20 s.
    records = [
        job("evaluate", "r/short1.json", 5.0),
        job("evaluate", "r/short2.json", 6.0),
        job("evaluate", "r/head.json", 5.0),
        job("report", "r/tail.json", 10.0, reads=("r/head.json",)),
    ]
    assert two_core_estimate(records) == (pytest.approx(15.0), pytest.approx(15.0))


def test_a_job_reading_a_path_nobody_writes_waits_for_nothing():
    assert two_core_estimate([job("evaluate", "r/a.json", 3.0, reads=("data/raw/x",))]) == (3.0, 3.0)


def test_seed_replicas_repeat_the_per_seed_jobs_and_share_data_and_report():
    records = [
        job("prepare-data", "r/data.pt", 2.0),
        job("train-classifier", "m/classifier/seed0.pt", 10.0, reads=("r/data.pt",)),
        job("evaluate", "r/eval/seed0/a.json", 4.0, reads=("m/classifier/seed0.pt",)),
        job("report", "r/report", 1.0, reads=("r/eval/seed0/a.json",)),
    ]
    three = replicate_seeds(records, [0, 1, 2])
    assert [job_name(r) for r in three].count("train-classifier seed1.pt") == 1 and len(three) == 8
    # one seed: 2 + 10 + 4 + 1. Three seeds on two cores: data; two trainings side by side (2-12); the third
    # (12-22) beside the first two evaluations (12-16, 16-20); the third evaluation (22-26); the report.
    assert two_core_estimate(records) == (pytest.approx(17.0), pytest.approx(17.0))
    estimate, critical = two_core_estimate(three)
    assert critical == pytest.approx(17.0) and estimate == pytest.approx(2 + 10 + 10 + 4 + 1)
    assert "r/eval/seed2/a.json" in three[-1]["argv"], "the report reads every seed's results"


@pytest.mark.parametrize("eager", [(), ("json",)])
def test_the_shim_records_atop_jobs_only(tmp_path, eager):
    records = tmp_path / "jobs.jsonl"
    shim = write_shim(tmp_path / "shim", records, eager)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(shim)])}
    subprocess.run([sys.executable, "-m", "atop", "--version"], env=env, check=True, capture_output=True)
    subprocess.run([sys.executable, "-c", "pass"], env=env, check=True)  # not a job: no record
    (record,) = read_records(records)
    assert record["argv"] == ["--version"]
    assert 0 < record["cpu"] < 60 and record["wall"] >= 0 and record["threads"] >= 1
    assert job_name(record) == "--version"
    assert job_name(job("evaluate", "results/digits/eval/ap/pgd.json", 1.0)) == "evaluate eval/ap/pgd.json"
