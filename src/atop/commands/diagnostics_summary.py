"""``python -m atop diagnostics-summary``: the diagnostics table, figures and EOT-sufficiency checks."""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger("atop")

HELP = "diagnostics table, figures and EOT-sufficiency checks"


def add_arguments(parser) -> None:
    parser.add_argument("--measures", type=Path, nargs="+", required=True)
    parser.add_argument("--concentration", type=Path, nargs="+", required=True)
    parser.add_argument("--results", type=Path, nargs="*", default=[], help="evaluation results the EOT checks judge")
    parser.add_argument(
        "--distortion",
        type=Path,
        nargs="*",
        default=[],
        help="decision-boundary distortion JSONs (fine-tuned defenses)",
    )
    parser.add_argument("--out-dir", type=Path, required=True)


def run(args) -> None:
    from ..diagnostics.summary import write_summary
    from ..io import read_json

    counts = write_summary(
        [read_json(p) for p in args.measures],
        [read_json(p) for p in args.concentration],
        [read_json(p) for p in args.results],
        args.out_dir,
        [read_json(p) for p in args.distortion],
    )
    log.info("diagnostics of %(defenses)d defenses; %(checks)d EOT-sufficiency checks, %(failed)d failed", counts)
