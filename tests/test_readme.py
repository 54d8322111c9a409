"""The documented commands, run verbatim (copied out of README.md and docs/, so a stale command fails here)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import REPO, run_snakemake
from report_fixtures import make_result

README = "\n".join(path.read_text() for path in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))])


def bash_blocks() -> list[str]:
    return re.findall(r"```bash\n(.*?)```", README, flags=re.DOTALL)


def readme_command(marker: str) -> str:
    """The README command containing ``marker``, its continuation lines joined."""
    for block in bash_blocks():
        for command in block.replace("\\\n", " ").splitlines():
            if marker in command:
                return command.split("  #")[0].strip()
    raise AssertionError(f"README.md and docs/ have no bash command with {marker!r}")


def _bash(command: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")])
    return subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, check=False)


def test_partial_report_command_reads_a_complete_run(tmp_path):
    """Section "Reading a run before it finishes": on the default run's layout every expected result is
    found; with one result still running, the summary names it and nothing else."""
    command = readme_command("report-partial")
    shutil.copytree(REPO / "config", tmp_path / "config")
    expected = re.search(r"--expected (\S+)", command).group(1)
    defenses, attacks = (m.split(",") for m in re.findall(r"\{([^}]*)\}", expected))
    folder = tmp_path / "results" / "digits" / "eval" / "seed0"
    for defense in defenses:
        for attack in attacks:
            path = folder / defense / f"{attack}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(make_result(defense, attack, 0.3, n=64, seed=0)))
    run = _bash(command, tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    metrics = json.loads((tmp_path / "results" / "digits" / "report-partial" / "metrics.json").read_text())
    assert metrics["results"] == len(defenses) * len(attacks) == 9 and metrics["missing"] == 0, run.stderr

    (folder / "atop" / "eot_pgd.json").unlink()  # that attack is still running
    run = _bash(command, tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    summary = (tmp_path / "results" / "digits" / "report-partial" / "summary.md").read_text()
    assert "results/digits/eval/seed0/atop/eot_pgd.json" in summary and "(8 results, 1 missing)" in run.stderr


def test_dry_run_command_plans_the_default_experiment(workflow_dir):
    """Quick start: `snakemake -n all` on a fresh checkout plans the default experiment."""
    command = readme_command("snakemake -n all").split()
    assert command[:3] == ["snakemake", "-n", "all"]
    run = run_snakemake(workflow_dir, *command[1:])
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    assert "prepare_data" in run.stdout and "report" in run.stdout
