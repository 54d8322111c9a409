"""``python -m atop <stage>``: the command each Snakemake rule runs.

Every stage takes its slice of the validated workflow config as one JSON
string (``--spec``), reads its inputs, and writes its outputs atomically.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

from . import __version__
from .errors import EXPECTED_ERRORS, InjectedFault

log = logging.getLogger("atop")

# The commands, in `--help` order. Each is a module, atop.commands.<command> (dashes as underscores),
# declaring HELP, add_arguments(parser) and run(args). A job imports its own command's module only:
# its start-up stays lean and its code hash covers that command alone (code_closure.py).
COMMANDS = (
    "prepare-data",
    "train-classifier",
    "train-adversarial",
    "pretrain-purifier",
    "finetune-purifier",
    "check-defense",
    "evaluate",
    "checks",
    "gradient-concentration",
    "robustness-measures",
    "boundary-distortion",
    "diagnostic-pictures",
    "diagnostics-summary",
    "report",
)


def command_module(command: str):
    name = f"{__package__}.commands.{command.replace('-', '_')}"
    __import__(name)  # not importlib.import_module: -X importtime (the jobs' logs) shows this import
    return sys.modules[name]


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or of command ``only`` alone, which parses that command's
    arguments exactly as the whole parser does (its usage still names every command)."""
    parser = argparse.ArgumentParser(prog="python -m atop", description=__doc__)
    parser.add_argument("--version", action="version", version=f"atop {__version__}")
    every = "{" + ",".join(COMMANDS) + "}"
    sub = parser.add_subparsers(dest="command", required=True, metavar=every if only else None)
    for command in (only,) if only else COMMANDS:
        module = command_module(command)
        p = sub.add_parser(command, help=module.HELP)
        p.set_defaults(func=module.run)
        module.add_arguments(p)
    return parser


# Fault injection for the fault suite (tests/test_reliability.py): commands named here (comma-separated,
# or *) fail after doing their work, the worst moment: their new outputs are written, then the job fails.
FAIL_COMMANDS = "ATOP_FAIL_COMMANDS"


def _injected_fault(command: str) -> None:
    named = {name.strip() for name in os.environ.get(FAIL_COMMANDS, "").split(",")}
    if command in named or "*" in named:
        raise InjectedFault(f"{FAIL_COMMANDS} names {command!r}: failing on purpose, after the work was done")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
    argv = sys.argv[1:] if argv is None else argv
    # A job names its command first: only that command's module is imported (help and errors: all).
    only = argv[0] if argv and argv[0] in COMMANDS else None
    args = build_parser(only).parse_args(argv)
    began = time.perf_counter()
    try:
        args.func(args)
        _injected_fault(args.command)
    except EXPECTED_ERRORS as error:
        log.error("%s failed: %s", args.command, error)
        return 1
    log.info("%s done in %.1f s", args.command, time.perf_counter() - began)
    return 0
