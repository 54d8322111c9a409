"""``python -m atop diagnostics-summary``: the diagnostics table, figures and EOT-sufficiency checks."""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger("atop")

HELP = "diagnostics table, figures and EOT-sufficiency checks"


def add_arguments(parser) -> None:
    parser.add_argument(
        "--diagnostics",
        type=Path,
        nargs="+",
        required=True,
        help="per-defense diagnostic JSONs (each diagnostic known by its output folder: diagnostics/catalog.py)",
    )
    parser.add_argument("--results", type=Path, nargs="*", default=[], help="evaluation results the EOT checks judge")
    parser.add_argument("--out-dir", type=Path, required=True)


def run(args) -> None:
    from ..diagnostics.summary import group_by_diagnostic, write_summary
    from ..io import read_json

    counts = write_summary(group_by_diagnostic(args.diagnostics), [read_json(p) for p in args.results], args.out_dir)
    log.info("diagnostics of %(defenses)d defenses; %(checks)d EOT-sufficiency checks, %(failed)d failed", counts)
