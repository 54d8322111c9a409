"""``python -m atop boundary-distortion``: decision-boundary distortion of one defense."""

from __future__ import annotations

import logging
import time

from ..config import resolve_numbers
from ._common import add_defense_arguments, setup
from ._diagnostics import diagnostic_defense, evaluation_subset, write_diagnostic

log = logging.getLogger("atop")

HELP = "decision-boundary distortion of one defense"


def add_arguments(parser) -> None:
    add_defense_arguments(parser)


def run(args) -> None:
    from ..data import load_prepared
    from ..diagnostics.distortion import boundary_distortion
    from ..diagnostics.settings import distortion_settings

    device = setup(args.spec)
    settings = distortion_settings(resolve_numbers(args.spec["diagnostics"]["distortion"]))
    if settings["eps"] is None:
        raise ValueError("diagnostics.distortion.eps is null here: the rule resolves it to finetune.eps")
    data = load_prepared(args.data)
    defense, built_from = diagnostic_defense(args.spec, args, device)
    x, y, idx = evaluation_subset(data, args.spec, settings["n_images"])
    began = time.perf_counter()
    result = boundary_distortion(
        defense, x, y, settings["eps"], settings["points"], settings["draws"], seed=args.spec["seed"]
    )
    result = write_diagnostic(args.out, result, args.defense, defense, began, built_from, sample_indices=idx.tolist())
    log.info(
        "%s: decision-boundary distortion %s (%d of %d segments right at both ends, m = %d, %d draws)",
        args.defense,
        "none measurable" if result["distortion"] is None else f"{result['distortion']:.3f}",
        result["distorted"],
        result["eligible"],
        settings["points"],
        result["draws"],
    )
