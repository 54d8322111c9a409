"""Per-job start-up: seconds from a fresh interpreter until a `python -m atop <command>` job
has imported what it runs, this checkout beside another git revision, interleaved.

A job's start-up is the interpreter plus `atop.cli` plus the modules its command
imports (each revision's own src/atop/code_closure.py reads them from the syntax tree, as
DVC does); it is paid once per job, so it multiplies by the DAG's job count.

    python benchmarks/startup.py [--before REV] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COMMANDS = [
    "prepare-data",
    "train-classifier",
    "train-adversarial",
    "pretrain-purifier",
    "finetune-purifier",
    "evaluate",
    "checks",
    "report",
]


def export(revision: str, target: Path) -> Path:
    """The revision's src/ in ``target`` (git archive: no checkout is touched)."""
    archive = subprocess.run(["git", "archive", revision, "src"], cwd=REPO, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target


def command_modules(root: Path, command: str) -> list[str]:
    """What a job of ``command`` imports after atop.cli, read by ``root``'s own code_closure.py (each
    revision knows its own layout: its commands' functions in cli.py, or one module per command)."""
    code = (
        "import json, sys\n"
        "from atop.code_closure import cli_command_modules\n"
        "print(json.dumps(sorted(cli_command_modules(sys.argv[1], sys.argv[2]))))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code, str(root), command],
        env={"PYTHONPATH": str(root / "src")},
        check=True,
        capture_output=True,
        text=True,
    )
    return [name for name in json.loads(run.stdout) if name != "atop"]


def startup_seconds(root: Path, modules: list[str]) -> float:
    code = (
        "import importlib, time\n"
        "t = time.perf_counter()\n"
        "import atop.cli\n"
        "getattr(atop.cli, '_expected_errors', lambda: None)()  # main() runs it before every command\n"
        f"for name in {modules!r}:\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except ModuleNotFoundError:  # a function imported from its module (the module is loaded)\n"
        "        importlib.import_module(name.rsplit('.', 1)[0])\n"
        "print(time.perf_counter() - t)\n"
    )
    began = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], env={"PYTHONPATH": str(root / "src")}, check=True, capture_output=True)
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", default="HEAD~1", help="the git revision to compare with (default HEAD~1)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--commands", nargs="+", default=COMMANDS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="atop-startup-") as scratch:
        roots = {args.before: export(args.before, Path(scratch)), "this checkout": REPO}
        modules = {
            (label, command): command_modules(root, command)
            for label, root in roots.items()
            for command in args.commands
        }
        times: dict[tuple[str, str], list[float]] = {}
        for _ in range(args.repeats):  # interleaved: a load spike hits both sides
            for command in args.commands:
                for label, root in roots.items():
                    times.setdefault((label, command), []).append(startup_seconds(root, modules[label, command]))
    before, after = list(roots)
    print(f"seconds from interpreter start to imports done, median of {args.repeats} (interleaved)")
    print(f"{'command':<20}{before:>16}{after:>16}{'after / before':>16}")
    for command in args.commands:
        b, a = statistics.median(times[before, command]), statistics.median(times[after, command])
        print(f"{command:<20}{b:>16.2f}{a:>16.2f}{a / b:>16.2f}")


if __name__ == "__main__":
    main()
