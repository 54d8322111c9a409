"""``python -m atop gradient-concentration``: GradDiv's gradient concentration of one defense."""

from __future__ import annotations

import logging
import time

from ._common import add_defense_arguments, setup
from ._diagnostics import diagnostic_defense, evaluation_subset, write_diagnostic

log = logging.getLogger("atop")

HELP = "GradDiv gradient concentration and EOT need"

# Draws of the defense batched into one gradient pass (GPUs want large batches).
GRADIENT_REPLICAS = {"cuda": 64, "cpu": 16}


def add_arguments(parser) -> None:
    add_defense_arguments(parser)


def run(args) -> None:
    from ..data import load_prepared
    from ..diagnostics.concentration import gradient_concentration
    from ..diagnostics.settings import check_concentration

    device = setup(args.spec)
    settings = args.spec["diagnostics"]["gradient_concentration"]
    check_concentration(settings["draws"], settings["reference_draws"], settings["cosine"])
    data = load_prepared(args.data)
    defense, built_from = diagnostic_defense(args.spec, args, device)
    x, y, idx = evaluation_subset(data, args.spec, settings["n_images"])
    defense.reseed(args.spec["seed"])
    began = time.perf_counter()
    # All draws of a deterministic defense coincide: two of each show it (R = 1, k = 1) at no cost.
    draws, reference = (settings["draws"], settings["reference_draws"]) if defense.randomized else (2, 2)
    result = gradient_concentration(
        defense, x, y, draws, reference, settings["cosine"], chunk=GRADIENT_REPLICAS.get(device.type, 16)
    )
    result = write_diagnostic(args.out, result, args.defense, defense, began, built_from, sample_indices=idx.tolist())
    log.info(
        "%s: R = %.3f over %d draws; EOT needed for cosine %.2f: %s",
        args.defense,
        result["mean_resultant_length"],
        draws,
        settings["cosine"],
        result["eot_needed"],
    )
