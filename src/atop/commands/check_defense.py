"""``python -m atop check-defense``: a custom defense's contract, checked before any attack runs on it."""

from __future__ import annotations

import logging

from ._common import add_defense_arguments, defense_from_args, defense_inputs, setup

log = logging.getLogger("atop")

HELP = "check a custom defense (shape, range, gradients, declared randomness) on a few test images"

CHECK_IMAGES = 16  # the first images of the evaluation's fixed subset


def add_arguments(parser) -> None:
    add_defense_arguments(parser)


def run(args) -> None:
    from ..data import load_prepared
    from ..defense_check import check_defense
    from ..evaluate import sample_indices
    from ..io import sha256_file, write_json
    from ..provenance import provenance

    device = setup(args.spec)
    spec = args.spec
    data = load_prepared(args.data)
    defense, built_from = defense_from_args(args, spec["seed"])
    defense = defense.to(device)
    n = min(CHECK_IMAGES, spec["evaluation"]["n_samples"])
    idx = sample_indices(len(data.labels("test")), n, spec["evaluation"]["sample_seed"])
    x, y = data.images("test")[idx].to(device), data.labels("test")[idx].to(device)
    try:
        result = check_defense(defense, x, y, data.num_classes, spec["seed"])
    except ValueError as error:
        raise type(error)(f"defense {args.defense!r} fails its check: {error}") from error
    for warning in result["warnings"]:
        log.warning("defense %s: %s", args.defense, warning)
    result |= {"defense": args.defense, **built_from, "experiment": spec["experiment"]}
    files = defense_inputs(args)
    result["provenance"] = provenance(device, {role: sha256_file(path) for role, path in files.items()})
    write_json(args.out, result)
    log.info("defense %s passes its check on %d images: %s", args.defense, n, result)
