"""A real one-node SLURM cluster on localhost, and the overrides that point profiles/slurm at it.

Used by tests/test_slurm.py and benchmarks/slurm_overhead.py. The cluster runs
from one scratch folder (setup_local_slurm.sh); the node advertises 32 CPUs,
160 GB and 4 GPUs, so the real profile's requests (8 CPUs, 32 GB, one GPU per job) are
scheduled unchanged, four jobs at a time: while one job starts up (its Snakemake, torch), others work. The
overrides replace only what is site-specific (partition, account, status
command) or machine-specific (threads, polling), as a workflow profile layered
over ``--profile profiles/slurm``.
"""

from __future__ import annotations

import os
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SLURM_PROFILE = REPO / "profiles" / "slurm" / "config.v8+.yaml"
CANNOT_INSTALL = 3  # setup_local_slurm.sh's exit status when SLURM cannot be installed
NODE = {"NODE_CPUS": "32", "NODE_MEMORY_MB": "160000", "NODE_GPUS": "4"}


class SlurmUnavailable(RuntimeError):
    """SLURM cannot be installed on this machine (not root, or apt-get failed)."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


@dataclass
class LocalCluster:
    scratch: Path

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.scratch / "slurm.conf")}

    def start(self) -> LocalCluster:
        ports = [str(_free_port()), str(_free_port())]
        run = subprocess.run(
            [str(HERE / "setup_local_slurm.sh"), str(self.scratch), *ports],
            env={**os.environ, **NODE},
            capture_output=True,
            check=False,
            text=True,
            timeout=900,
        )
        if run.returncode == CANNOT_INSTALL:
            raise SlurmUnavailable(run.stderr.strip())
        if run.returncode != 0:
            raise RuntimeError(f"setup_local_slurm.sh failed ({run.returncode}):\n{run.stdout}\n{run.stderr}")
        return self

    def stop(self) -> None:
        subprocess.run([str(HERE / "teardown_local_slurm.sh"), str(self.scratch)], timeout=120, check=False)

    def jobs(self) -> list[dict[str, str]]:
        """Every job the controller still knows (finished ones for MinJobAge): id, state, GPUs, comment."""
        fields = ["JobID", "State", "tres-per-job", "Comment"]
        out = subprocess.run(
            ["squeue", "--states=all", "--noheader", "-O", ",".join(f"{f}:200" for f in fields)],
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return [dict(zip(fields, line.split())) for line in out.splitlines() if line.strip()]


def local_overrides() -> dict:
    """profiles/slurm with its site knobs set for the local cluster; every request is kept."""
    real = yaml.safe_load(SLURM_PROFILE.read_text())
    default_resources = {k: v for k, v in real["default-resources"].items() if k != "slurm_account"}
    default_resources["slurm_partition"] = "debug"
    set_resources = {
        rule: {**resources, "slurm_partition": "debug"} if "slurm_partition" in resources else dict(resources)
        for rule, resources in real["set-resources"].items()
    }
    return {
        "default-resources": default_resources,  # the test cluster has no accounts
        "set-resources": set_resources,
        "set-threads": {rule: 1 for rule in real.get("set-threads", {})},  # 2 real cores, up to 4 jobs at once
        "slurm-status-command": "squeue",  # no accounting database
        "slurm-init-seconds-before-status-checks": 1,
        "seconds-between-status-checks": 1,
        "slurm-keep-successful-logs": True,
        "latency-wait": 5,
    }


def write_override_profile(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.v8+.yaml").write_text(yaml.safe_dump(local_overrides(), sort_keys=False))
    return folder
