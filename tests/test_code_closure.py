"""Code closures: the files a `python -m atop <command>` job runs, hashed into its `code` param and
listed as its DVC stage's deps, so that an edit reruns the jobs that run the edited code and no others."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest

from atop.code_closure import (
    ClosureError,
    cli_command_modules,
    command_closure,
    command_code_version,
    stage_closure,
)

from conftest import REPO

ATTACK_MODULES = {"apgd.py", "bpda.py", "ensemble.py", "eot.py", "stadv.py"}
TRAINING = ("train-classifier", "train-adversarial", "pretrain-purifier", "finetune-purifier")


def attack_modules(files: list[str]) -> set[str]:
    return {Path(path).name for path in files if path.startswith("src/atop/attacks/") and path.endswith(".py")} - {
        "__init__.py"
    }


def test_training_runs_no_attack_module_beyond_its_monitors_fgsm_and_pgd():
    """The AT baseline and fine-tuning monitor overfitting with FGSM and PGD (BatchedEOTPGD, eot.py);
    the classifier and the purifier's pre-training attack nothing."""
    assert attack_modules(command_closure(REPO, "train-adversarial")) == {"eot.py"}
    assert attack_modules(command_closure(REPO, "finetune-purifier")) == {"eot.py"}
    for command in ("train-classifier", "pretrain-purifier", "prepare-data"):
        closure = command_closure(REPO, command)
        assert not [path for path in closure if "/attacks/" in path or "/diagnostics/" in path], command
    for command in TRAINING:
        assert "src/atop/diagnostics/distortion.py" not in command_closure(REPO, command), command
    # pre-training builds no defended model and monitors nothing (those imports sit in fine-tuning)
    pretrain = command_closure(REPO, "pretrain-purifier")
    assert not {"src/atop/defense.py", "src/atop/finetune_attacks.py", "src/atop/metrics.py"} & set(pretrain)


@pytest.mark.parametrize(
    "method, modules",
    [
        ("fgsm", {"eot.py"}),
        ("eot_pgd", {"eot.py"}),
        ("bpda_eot", {"bpda.py", "eot.py"}),
        ("square", set()),
        ("aa_standard", {"apgd.py", "ensemble.py"}),
        ("aa_rand", {"apgd.py", "ensemble.py"}),
        ("stadv", {"stadv.py"}),
    ],
)
def test_an_evaluation_runs_its_attacks_modules_only(method, modules):
    assert attack_modules(command_closure(REPO, "evaluate", (method,))) == modules


def test_an_attack_edit_changes_the_code_version_of_its_jobs_only(tmp_path):
    repo = tmp_path / "repo"
    (repo / "src").mkdir(parents=True)
    shutil.copytree(REPO / "src/atop", repo / "src/atop")
    before = {
        (command, attacks): command_code_version(repo, command, attacks)
        for command, attacks in [("evaluate", ("stadv",)), ("evaluate", ("fgsm",)), ("train-adversarial", None)]
    }
    stadv = repo / "src/atop/attacks/stadv.py"
    stadv.write_text(stadv.read_text() + "\n# an edit\n")
    command_code_version.cache_clear()
    after = {key: command_code_version(repo, *key) for key in before}
    assert [key for key in before if before[key] != after[key]] == [("evaluate", ("stadv",))]


def test_a_command_edit_changes_the_code_version_of_its_own_jobs_only(tmp_path):
    """Each command is its own module (src/atop/commands/): the other commands' jobs do not run it.
    A module the commands share changes the code version of the commands that use it."""
    repo = tmp_path / "repo"
    (repo / "src").mkdir(parents=True)
    shutil.copytree(REPO / "src/atop", repo / "src/atop")
    commands = ("train-classifier", "evaluate", "boundary-distortion", "checks")
    before = {command: command_code_version(repo, command) for command in commands}
    for module, changed in [
        ("commands/evaluate.py", ["evaluate"]),
        ("commands/_diagnostics.py", ["boundary-distortion"]),
        ("commands/_training.py", ["train-classifier"]),
        ("cli.py", list(commands)),
    ]:
        path = repo / "src/atop" / module
        path.write_text(path.read_text() + "\n# an edit\n")
        command_code_version.cache_clear()
        after = {command: command_code_version(repo, command) for command in commands}
        assert [command for command in commands if before[command] != after[command]] == changed, module
        before = after


def test_diagnostics_run_their_own_code():
    distortion = command_closure(REPO, "boundary-distortion")
    assert "src/atop/diagnostics/distortion.py" in distortion
    assert "src/atop/train/monitor.py" not in distortion  # the monitor is training's
    assert not attack_modules(distortion)
    measures = command_closure(REPO, "robustness-measures", ("eot_pgd",))
    assert attack_modules(measures) == {"eot.py"} and "src/atop/diagnostics/measures.py" in measures


def test_a_stage_depends_on_every_attack_its_jobs_may_build():
    assert attack_modules(stage_closure(REPO, ["evaluate"])) == ATTACK_MODULES
    assert attack_modules(stage_closure(REPO, ["train-classifier", "train-adversarial"])) == {"eot.py"}


def test_unknown_commands_and_attacks_are_named():
    with pytest.raises(ClosureError, match="no command 'nope'"):
        command_closure(REPO, "nope")
    with pytest.raises(ClosureError, match="no_such_attack"):
        command_closure(REPO, "evaluate", ("no_such_attack",))


def _package(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / "src/atop" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def test_the_closure_rules_on_a_small_package(tmp_path):
    """What counts: module level, the command's own module, named functions, registry entries, literal
    attack names; not: other commands' modules, functions nobody names, TYPE_CHECKING imports, other
    attacks' builders."""
    repo = _package(
        tmp_path,
        {
            "__init__.py": "",
            "__main__.py": "from .cli import main\n",
            "cli.py": """
                from .base import shared

                COMMANDS = ("train", "evaluate", "other")

                def main(command):
                    return __import__(f"atop.commands.{command}")
            """,
            "commands/__init__.py": "",
            "commands/_shared.py": """
                def helper():
                    from ..helped import x

                def unused_helper():
                    from ..never import z
            """,
            "commands/train.py": """
                from ._shared import helper

                def run(args):
                    from ..train import fit
                    helper()
            """,
            "commands/evaluate.py": """
                def run(args):
                    from ..evaluate import run
            """,
            "commands/other.py": """
                def run(args):
                    from ..other import y
            """,
            "base.py": "def shared():\n    pass\n",
            "helped.py": "x = 1\n",
            "other.py": "y = 1\n",
            "train.py": """
                from typing import TYPE_CHECKING

                from .attacks import build_attack
                from .registry import REGISTRY

                if TYPE_CHECKING:
                    from .typing_only import T

                def fit():
                    return build_attack("fast", None)

                def unused():
                    from .never import z

                @REGISTRY.register("entry")
                def registered():
                    from .by_registry import w
            """,
            "registry.py": "REGISTRY = None\n",
            "typing_only.py": "T = 1\n",
            "never.py": "z = 1\n",
            "by_registry.py": "w = 1\n",
            "evaluate.py": """
                from .attacks import build_attack

                def run(name):
                    return build_attack(name, None)
            """,
            "attacks/__init__.py": """
                def register_attack(name):
                    return lambda f: f

                def build_attack(name, model):
                    pass

                @register_attack("fast")
                def fast(model):
                    from .fast import F

                @register_attack("slow")
                def slow(model):
                    from .slow import S
            """,
            "attacks/fast.py": "F = 1\n",
            "attacks/slow.py": "S = 1\n",
        },
    )

    def names(files):
        return {path.removeprefix("src/atop/") for path in files}

    common = {"__init__.py", "__main__.py", "cli.py", "base.py", "commands/__init__.py"}
    train = names(command_closure(repo, "train"))
    assert train == common | {
        "commands/train.py",
        "commands/_shared.py",
        "helped.py",
        "train.py",
        "registry.py",
        "by_registry.py",
        "attacks/__init__.py",
        "attacks/fast.py",
    }
    # what a job imports after atop.cli (benchmarks/startup.py): its command's module, run's imports and
    # those of the shared helpers run calls
    assert cli_command_modules(repo, "train") == {
        "atop.commands.train",
        "atop.train",
        "atop.train.fit",
        "atop.helped",
        "atop.helped.x",
    }
    # a run-time attack name: the job's attacks, or every builder when none are given
    assert names(command_closure(repo, "evaluate", ("slow",))) == common | {
        "commands/evaluate.py",
        "evaluate.py",
        "attacks/__init__.py",
        "attacks/slow.py",
    }
    assert {"attacks/fast.py", "attacks/slow.py"} <= names(command_closure(repo, "evaluate"))
