"""What a job imports before it works (start-up is most of a small job's seconds): each check runs in
a fresh interpreter, as a Snakemake job starts."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import REPO


def _modules_after(code: str) -> set[str]:
    """The modules a fresh interpreter holds after running ``code``."""
    script = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    run = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        env={"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    return set(json.loads(run.stdout.splitlines()[-1]))


@pytest.mark.parametrize(
    "code",
    [
        "from atop.checks import cross_attack_checks; from atop.diagnostics.summary import eot_sufficiency_checks",
        "from atop.report import write_report",
        "import atop.cli",
    ],
    ids=["checks", "report", "cli"],
)
def test_checks_report_and_cli_start_without_torch(code):
    modules = _modules_after(code)
    assert "torch" not in modules and "torchattacks" not in modules


@pytest.mark.parametrize(
    "code",
    [
        "import atop.attacks",
        "import atop.finetune_attacks",
        "import atop.train.adversarial",
        "import atop.evaluate, atop.defense, atop.data",
    ],
    ids=["attacks", "finetune-attacks", "adversarial-training", "evaluate"],
)
def test_attack_jobs_import_only_the_attacks_they_use(code):
    modules = _modules_after(code)
    assert "torchattacks.attack" in modules and "torchattacks.attacks.apgd" in modules or "attacks" not in code
    # torchattacks' __init__ (every attack, scipy.stats through TIFGSM, scipy.optimize through OnePixel)
    assert not {"torchattacks.attacks.tifgsm", "torchattacks.attacks.onepixel"} & modules
    assert not {m for m in modules if m.startswith(("scipy.stats", "scipy.optimize"))}


def test_the_rest_of_torchattacks_loads_on_first_use_with_the_same_classes():
    code = (
        "from atop.torchattacks_lean import torchattacks as lean, Attack\n"
        "import torchattacks\n"
        "assert torchattacks is lean and torchattacks.PGD is lean.PGD and issubclass(torchattacks.PGD, Attack)\n"
        "assert torchattacks.TIFGSM.__module__ == 'torchattacks.attacks.tifgsm'\n"  # the real __init__ ran
        "assert torchattacks.Square is lean.Square and torchattacks.__version__\n"
        "try:\n    torchattacks.NoSuchAttack\nexcept AttributeError:\n    pass\nelse:\n    raise SystemExit('no error')\n"
    )
    assert "torchattacks.attacks.tifgsm" in _modules_after(code)


def test_package_without_init_refuses_a_plain_module_or_a_missing_package():
    code = (
        "from atop.torchattacks_lean import package_without_init\n"
        "for name in ('tabnanny', 'no_such_package_here'):\n"
        "    try:\n        package_without_init(name)\n"
        "    except ModuleNotFoundError as error:\n        print(error)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], check=False, env={"PYTHONPATH": str(REPO / "src")}, capture_output=True, text=True
    )
    assert run.stdout.splitlines() == ["no package named 'tabnanny'", "no package named 'no_such_package_here'"], (
        run.stderr
    )
