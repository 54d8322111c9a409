"""``python -m atop checks``: the gradient-obfuscation checks over a seed's results."""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger("atop")

HELP = "cross-attack and sweep gradient-obfuscation checks"


def add_arguments(parser) -> None:
    parser.add_argument("--results", type=Path, nargs="+", required=True)
    parser.add_argument("--sweeps", type=Path, nargs="*", default=[])
    parser.add_argument("--out", type=Path, required=True)


def run(args) -> None:
    from ..checks import cross_attack_checks, sweep_checks
    from ..io import read_json, write_json

    results = [read_json(path) for path in args.results]
    points = [read_json(path) for path in args.sweeps]
    per_result = [
        {"defense": r["defense"], "attack": r["attack"], "check": name, **check}
        for r in results + points
        for name, check in r.get("checks", {}).items()
    ]
    summary = {
        "per_result": per_result,
        "cross_attack": cross_attack_checks(results),
        "sweeps": sweep_checks(points),
    }
    failed = [c for group in summary.values() for c in group if not c["passed"]]
    summary["passed"] = not failed
    summary["failed"] = failed
    write_json(args.out, summary)
    for check in failed:
        log.warning("OBFUSCATION CHECK FAILED: %s: %s", check.get("defense"), check["detail"])
    log.info(
        "%d checks, %d failed", sum(len(g) for g in summary.values() if isinstance(g, list)) - len(failed), len(failed)
    )
