"""Shared fixtures: a copy of the workflow in a temporary folder and a tiny config."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
WORKFLOW_FILES = ("Snakefile", "rules", "config", "profiles", "report", "environment.yml")
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))


def tiny_config() -> dict:
    """A few hundred digits, one short epoch per stage, strong budgets, 2 draws."""
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["experiment"] = "tiny"
    config["data"] |= {"image_size": 16, "limit": 300, "val_size": 40, "test_size": 60}
    config["classifier"] |= {"epochs": 2, "batch_size": 32}
    config["purifier"]["arch_params"] = {"base_channels": 4}
    config["purifier"]["transform_params"]["grid"] = 4
    config["purifier"]["pretrain"] |= {"epochs": 1, "batch_size": 32}
    config["finetune"] |= {"epochs": 1, "batch_size": 32, "max_clean_drop": 1.0, "check_draws": 1}
    config["evaluation"] |= {"n_samples": 40, "draws": 2, "batch_size": 40}
    config["evaluation"]["attacks"] = {
        "fgsm": {"method": "fgsm", "eps": "64/255"},
        "eot_pgd": {"method": "eot_pgd", "eps": "64/255", "alpha": "16/255", "steps": 3, "eot": 2},
    }
    return config


@pytest.fixture
def workflow_dir(tmp_path: Path) -> Path:
    """The workflow's files copied into a fresh folder, as a user's checkout would have them."""
    for name in WORKFLOW_FILES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, tmp_path / name)
        else:
            shutil.copy2(source, tmp_path / name)
    return tmp_path


def write_config(folder: Path, config: dict, name: str = "test.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def run_snakemake(folder: Path, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [SNAKEMAKE, *args], cwd=folder, env=env, capture_output=True, text=True, timeout=timeout
    )
