"""Preemption: a training process killed mid-run (SIGKILL, as SLURM preemption or a node
failure would) resumes from its last epoch and ends with an uninterrupted run's weights.

Each stage saves `<checkpoint>.resume` atomically after every epoch; the restarted command
(SLURM requeue, Snakemake --retries, or a rerun) picks it up. Snakemake does not declare it
as an output, so a failed job's clean-up leaves it in place.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import REPO, run_snakemake, tiny_config, write_config

ENV = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
EPOCHS = {"train-classifier": 4, "pretrain-purifier": 3}


def _atop(*args: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "atop", *args],
        cwd=cwd,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _finish(process: subprocess.Popen, timeout: int = 300) -> str:
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output[-3000:]
    return output


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("data")
    spec = {"seed": 0, "data": {**tiny_config()["data"], "limit": 120, "val_size": 10, "test_size": 10}}
    _finish(
        _atop(
            "prepare-data",
            "--spec",
            json.dumps(spec),
            "--out-data",
            "dataset.pt",
            "--out-manifest",
            "m.json",
            cwd=folder,
        )
    )
    return folder / "dataset.pt"


def _training_command(stage: str, dataset: Path) -> list[str]:
    config = tiny_config()
    if stage == "train-classifier":
        spec = {
            "seed": 0,
            "device": "cpu",
            "classifier": {**config["classifier"], "epochs": EPOCHS[stage], "weight_decay": 0.0},
        }
    else:
        (purifier,) = config["purifiers"].values()
        spec = {
            "seed": 0,
            "device": "cpu",
            "purifier": {**purifier, "pretrain": {**purifier["pretrain"], "epochs": EPOCHS[stage]}},
        }
    return [
        stage,
        "--spec",
        json.dumps(spec),
        "--data",
        str(dataset),
        "--out-checkpoint",
        "model.pt",
        "--out-curve",
        "curve.csv",
    ]


def _kill_after_first_epoch(process: subprocess.Popen, resume: Path) -> int:
    """SIGKILL the process as soon as its first resume state exists; return the epochs it had saved."""
    deadline = time.monotonic() + 240
    while not resume.exists():
        assert process.poll() is None, "the training process ended before saving any resume state"
        assert time.monotonic() < deadline, "no resume state after 240 s"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL
    return int(torch.load(resume, weights_only=True)["epoch"])


@pytest.mark.parametrize("stage", ["train-classifier", "pretrain-purifier"])
def test_killed_training_resumes_to_the_uninterrupted_weights(tmp_path, dataset, stage):
    command, epochs = _training_command(stage, dataset), EPOCHS[stage]
    killed, uninterrupted = tmp_path / "killed", tmp_path / "uninterrupted"
    killed.mkdir()
    uninterrupted.mkdir()

    saved = _kill_after_first_epoch(_atop(*command, cwd=killed), killed / "model.pt.resume")
    assert 1 <= saved < epochs, f"killed after {saved} of {epochs} epochs: not mid-run"
    assert not (killed / "model.pt").exists(), "a killed run must not publish a checkpoint"

    log = _finish(_atop(*command, cwd=killed))
    assert f"resuming after epoch {saved}/{epochs}" in log
    assert not (killed / "model.pt.resume").exists(), "the resume state is removed once the checkpoint is published"
    _finish(_atop(*command, cwd=uninterrupted))

    resumed = torch.load(killed / "model.pt", weights_only=True)["state_dict"]
    reference = torch.load(uninterrupted / "model.pt", weights_only=True)["state_dict"]
    assert resumed.keys() == reference.keys()
    for name, tensor in reference.items():
        assert torch.equal(resumed[name], tensor), f"{name} differs after resuming"
    curve = (killed / "curve.csv").read_text().splitlines()
    assert len(curve) == epochs + 1, "the resumed curve keeps the epochs from before the kill"


@pytest.mark.workflow
def test_snakemake_keeps_the_resume_state_of_a_killed_job(workflow_dir):
    """A job killed under Snakemake fails, its outputs are cleaned, its resume state is not."""
    config = tiny_config()
    epochs = config["classifier"]["epochs"] = EPOCHS["train-classifier"]
    configfile = write_config(workflow_dir, config)
    target = "models/tiny/classifier/seed0.pt"
    resume = workflow_dir / f"{target}.resume"
    snakemake = subprocess.Popen(
        [str(Path(sys.executable).with_name("snakemake")), "--cores", "2", target, "--configfile", str(configfile)],
        cwd=workflow_dir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=ENV,
    )
    deadline = time.monotonic() + 240
    while not resume.exists():
        assert snakemake.poll() is None and time.monotonic() < deadline, "training never saved a resume state"
        time.sleep(0.01)
    # The job's own process: a training command running in this test's folder, killed by pid.
    candidates = subprocess.run(
        ["pgrep", "-f", "atop train-classifier"], capture_output=True, text=True, check=False
    ).stdout.split()
    own = [pid for pid in candidates if Path(f"/proc/{pid}/cwd").resolve() == workflow_dir.resolve()]
    assert own, "could not find the training job's process"
    for pid in own:
        os.kill(int(pid), signal.SIGKILL)
    output, _ = snakemake.communicate(timeout=120)
    assert snakemake.returncode != 0, output[-3000:]
    assert resume.exists(), "Snakemake removed the resume state of the failed job"
    saved = int(torch.load(resume, weights_only=True)["epoch"])

    rerun = run_snakemake(workflow_dir, "--cores", "2", target, "--configfile", str(configfile), env=ENV)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    log = (workflow_dir / "results" / "tiny" / "logs" / "train_classifier" / "seed0.log").read_text()
    assert f"resuming after epoch {saved}/{epochs}" in log
    assert not resume.exists() and (workflow_dir / target).is_file()
