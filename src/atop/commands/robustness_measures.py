"""``python -m atop robustness-measures``: robust generalization and flatness of one defense."""

from __future__ import annotations

import logging
import time

from ._common import add_defense_arguments, setup
from ._diagnostics import diagnostic_attack, diagnostic_defense, evaluation_subset, write_diagnostic

log = logging.getLogger("atop")

HELP = "robust-generalization measures of one defense"


def add_arguments(parser) -> None:
    add_defense_arguments(parser)


def run(args) -> None:
    import torch

    from ..data import load_prepared
    from ..diagnostics.measures import robustness_measures
    from ..diagnostics.settings import check_flatness

    device = setup(args.spec)
    settings = args.spec["diagnostics"]["measures"]
    check_flatness(settings["flatness_xi"], settings["flatness_draws"])
    data = load_prepared(args.data)
    defense, built_from = diagnostic_defense(args.spec, args, device)
    attack, draws = diagnostic_attack(args.spec, defense, data.num_classes)
    x_test, y_test, test_idx = evaluation_subset(data, args.spec, settings["n_images"])
    order = torch.randperm(len(data.labels("train")), generator=torch.Generator().manual_seed(args.spec["seed"]))
    train_idx = order[: settings["n_images"]].sort().values
    # the parts whose weight flatness is measured: a custom defense is one module (defense.py)
    networks = {"defense": defense.network} if hasattr(defense, "network") else {"classifier": defense.classifier}
    if defense.purifier is not None:
        networks["purifier"] = defense.purifier
    began = time.perf_counter()
    result = robustness_measures(
        defense,
        attack,
        (data.images("train")[train_idx], data.labels("train")[train_idx]),
        (x_test, y_test),
        draws,
        args.spec["seed"],
        settings["flatness_xi"],
        settings["flatness_draws"],
        networks,
    )
    result = write_diagnostic(
        args.out,
        result,
        args.defense,
        defense,
        began,
        built_from,
        attack=args.spec["attack_name"],
        attack_params=args.spec["attack"],
        train_indices=train_idx.tolist(),
        test_indices=test_idx.tolist(),
    )
    log.info(
        "%s: robust accuracy train %.3f test %.3f (gap %.3f); flatness %s",
        args.defense,
        result["train"]["robust_accuracy"],
        result["test"]["robust_accuracy"],
        result["robust_generalization_gap"],
        {part: round(f["flatness"], 4) for part, f in result["flatness"].items()},
    )
