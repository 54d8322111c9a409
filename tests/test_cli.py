"""`python -m atop <command>`: atop.cli's registry of commands, one module each (src/atop/commands/),
and a job importing its own command's module only."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from atop.cli import COMMANDS, build_parser, command_module

from conftest import REPO


def test_the_registry_and_the_command_modules_agree():
    modules = {path.stem for path in (REPO / "src/atop/commands").glob("*.py") if not path.stem.startswith("_")}
    assert modules == {command.replace("-", "_") for command in COMMANDS}
    for command in COMMANDS:
        module = command_module(command)
        assert isinstance(module.HELP, str) and callable(module.add_arguments) and callable(module.run), command


@pytest.mark.parametrize("command", COMMANDS)
def test_one_commands_parser_is_the_whole_parsers(command):
    """What a job builds (its own command alone) prints the same help and usage as the whole parser."""
    whole, alone = build_parser(), build_parser(command)
    assert alone.format_usage() == whole.format_usage()
    whole_commands, alone_commands = (
        next(action for action in parser._actions if action.dest == "command").choices for parser in (whole, alone)
    )
    assert list(alone_commands) == [command]
    assert alone_commands[command].format_help() == whole_commands[command].format_help()


def test_a_job_imports_its_own_command_module_only():
    code = (
        "import sys, json\n"
        "from atop.cli import build_parser\n"
        "build_parser('evaluate').parse_args(['evaluate', '--spec', '{}', '--data', 'd', '--defense', 'x',"
        " '--attack', 'a', '--classifier', 'c', '--out', 'o'])\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('atop.commands'))))"
    )
    run = subprocess.run(
        [sys.executable, "-c", code],
        env={"PYTHONPATH": str(REPO / "src")},
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == ["atop.commands", "atop.commands._common", "atop.commands.evaluate"]
