"""``python -m atop report``: tables, figures, metrics and summary from whatever results exist."""

from __future__ import annotations

import logging
from pathlib import Path

from ._common import parse_spec

log = logging.getLogger("atop")

HELP = "tables, figures, metrics and summary from whatever results exist"


def add_arguments(parser) -> None:
    parser.add_argument("--experiment", required=True)
    parser.add_argument(
        "--dataset", required=True, help="the run's dataset; paper numbers of other datasets are not compared"
    )
    parser.add_argument(
        "--results", type=Path, nargs="+", required=True, help="result JSONs, or folders searched for them"
    )
    parser.add_argument("--curves", type=Path, nargs="*", default=[], help="training-curve CSVs, or folders of them")
    parser.add_argument(
        "--reference", type=Path, nargs="*", default=[], help="CSVs of the paper's numbers (config/reference)"
    )
    parser.add_argument("--expected", type=Path, nargs="*", default=[], help="result files the experiment should have")
    parser.add_argument(
        "--checks",
        type=Path,
        nargs="*",
        default=[],
        help="obfuscation_checks/seed<N>.json (cross-attack and sweep checks) and diagnostics/seed<N>/eot_checks.json (EOT sufficiency), of every seed",
    )
    parser.add_argument(
        "--protocols",
        type=Path,
        nargs="*",
        default=[],
        help="the scoring protocols' own results (protocols/seed<N>/<defense>/<protocol>.json), or folders of them",
    )
    parser.add_argument(
        "--overfitting",
        type=parse_spec,
        default=None,
        help="JSON of the overfitting detectors' thresholds (config diagnostics.overfitting); default: the schema's",
    )
    parser.add_argument(
        "--verdicts",
        type=parse_spec,
        default=None,
        help="JSON of config verdicts (decide_on, equivalence_margin); default: the schema's",
    )
    parser.add_argument("--purifier", help="purifier architecture behind bare ap / atop defense names")
    parser.add_argument("--transform", help="random transform (rt1|rt2|rt3) behind bare ap / atop defense names")
    parser.add_argument("--out-dir", type=Path, required=True)


def run(args) -> None:
    from ..report import write_report

    metrics = write_report(
        args.results,
        args.out_dir,
        args.experiment,
        args.dataset,
        curve_paths=args.curves,
        reference_paths=args.reference,
        expected=args.expected,
        purifier=args.purifier,
        transform=args.transform,
        checks_paths=args.checks,
        overfitting=args.overfitting,
        verdicts=args.verdicts,
        protocol_paths=args.protocols,
    )
    log.info("report written to %s (%d results, %d missing)", args.out_dir, metrics["results"], metrics["missing"])
