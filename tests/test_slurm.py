"""The tiny workflow end to end on a real one-node SLURM cluster, through profiles/slurm.

tests/slurm/setup_local_slurm.sh installs (if needed) and starts munge and SLURM on
localhost; the run uses `--profile profiles/slurm` with a workflow profile that sets
only the site knobs (partition, no account, squeue status, polling, threads). The node
advertises 32 CPUs, 160 GB and 4 GPUs, so every request of the real profile - GPUs
included - is scheduled as written. Skips only where SLURM cannot be installed.
"""

from __future__ import annotations

import fcntl
import json
import re
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO, run_snakemake, tiny_config, write_config

sys.path.insert(0, str(REPO / "tests" / "slurm"))
from local_cluster import SLURM_PROFILE, LocalCluster, SlurmUnavailable, write_override_profile

pytestmark = [pytest.mark.workflow, pytest.mark.slurm]

GPU_RULES = (
    "train_classifier",
    "train_adversarial",
    "pretrain_purifier",
    "finetune_purifier",
    "evaluate",
    "evaluate_sweep",
    "evaluate_protocol",
    "gradient_concentration",
    "robustness_measures",
    "boundary_distortion",
    "diagnostic_pictures",
)
SUBMITTED = re.compile(r"Job \d+ has been submitted with SLURM jobid (\d+) \(log: (\S+)\)")


@pytest.fixture(scope="module")
def local_slurm(tmp_path_factory):
    # One local cluster per machine at a time: /etc/slurm/slurm.conf points at it.
    with open("/tmp/atop-local-slurm.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        cluster = LocalCluster(tmp_path_factory.mktemp("slurm"))
        try:
            cluster.start()
        except SlurmUnavailable as error:
            pytest.skip(f"SLURM cannot be installed here: {error}")
        try:
            yield cluster
        finally:
            cluster.stop()


def test_profile_requests_a_gpu_for_every_gpu_rule():
    profile = yaml.safe_load(SLURM_PROFILE.read_text())
    assert profile["executor"] == "slurm" and profile["retries"] >= 1 and profile["slurm-requeue"] is True
    assert "CHANGE-ME" in profile["default-resources"]["slurm_account"]
    for rule in (*GPU_RULES, "check_defense"):  # a custom defense's check: no job in the tiny run below
        resources = profile["set-resources"][rule]
        assert resources["gpu"] == 1 and resources["cpus_per_gpu"] >= 1, rule
        assert resources["runtime"] > 0 and resources["mem_mb"] > 0, rule
        assert profile["set-threads"][rule] == resources["cpus_per_gpu"], rule


def every_rule_config() -> dict:
    """The tiny config cut to the fewest jobs that still take every rule through SLURM: the AT
    baseline (train_adversarial) and AToP (purifier pre-training, fine-tuning, the diagnostics of
    a fine-tuned defense), one attack, the eps sweep on atop."""
    config = tiny_config()
    evaluation = config["evaluation"]
    evaluation["defenses"] = ["at", "atop"]
    evaluation["attacks"] = {"eot_pgd": evaluation["attacks"]["eot_pgd"]}
    evaluation["sweeps"]["eps"] |= {"attack": "eot_pgd"}
    return config


def test_tiny_workflow_through_slurm(workflow_dir, local_slurm):
    configfile = write_config(workflow_dir, every_rule_config())
    write_override_profile(workflow_dir / "slurm-local")
    run = run_snakemake(
        workflow_dir,
        *("--profile", str(REPO / "profiles" / "slurm"), "--workflow-profile", "slurm-local"),
        *("all", "--configfile", str(configfile)),
        env=local_slurm.env,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-4000:]

    results, models = workflow_dir / "results" / "tiny", workflow_dir / "models" / "tiny"
    for name in (
        "classifier/seed0",
        "classifier_adversarial/seed0",
        "purifier_pretrained/seed0/gan-rt2",
        "purifier_finetuned/seed0/gan-rt2",
    ):
        assert (models / f"{name}.pt").stat().st_size > 0
        assert not (models / f"{name}.pt.resume").exists()
    for defense in ("at", "atop"):
        result = json.loads((results / "eval" / "seed0" / defense / "eot_pgd.json").read_text())
        assert 0 <= result["robust"]["accuracy"] <= result["clean"]["accuracy"] <= 1
    metrics = json.loads((results / "report" / "metrics.json").read_text())
    assert set(metrics["defenses"]) == {"at", "atop"}

    # Every job went through sbatch: Snakemake's SLURM job ids are the controller's jobs.
    submitted = {int(job_id): Path(log) for job_id, log in SUBMITTED.findall(output)}
    # prepare, classifier, AT, pre-train, fine-tune, 2 evaluations, 4 sweep points (eps, EOT), checks,
    # report, the diagnostics: 2 gradient concentrations, 2 measures, atop's distortion, pictures, summary,
    # and atop's one scoring-protocol job (config/tiny.yaml)
    assert len(submitted) == 21, output[-4000:]
    jobs = {int(job["JobID"]): job for job in local_slurm.jobs()}
    assert set(submitted) <= set(jobs)
    for job_id, log in submitted.items():
        job = jobs[job_id]
        rule = re.match(r"rule_(\w+?)_wildcards", job["Comment"]).group(1)
        assert job["State"] == "COMPLETED", job
        # The GPU rules got a GPU from SLURM; the others did not ask for one.
        assert (job["tres-per-job"] == "gres:gpu:1") == (rule in GPU_RULES), job
        assert log.is_file() and f"rule {rule}:" in log.read_text(), log
    rules = sorted(re.match(r"rule_(\w+?)_wildcards", jobs[i]["Comment"]).group(1) for i in submitted)
    assert rules.count("evaluate") == 2 and rules.count("evaluate_sweep") == 4 and rules.count("report") == 1
    assert set(rules) == {*GPU_RULES, "prepare_data", "obfuscation_checks", "diagnostics_summary", "report"}

    again = run_snakemake(workflow_dir, "-n", "all", "--configfile", str(configfile))
    assert "Nothing to be done" in again.stdout + again.stderr
