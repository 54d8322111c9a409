"""``python -m atop diagnostic-pictures``: fixed test images through every defense."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

from ._common import add_spec, setup
from ._diagnostics import diagnostic_attack, diagnostic_defense, evaluation_subset

log = logging.getLogger("atop")

HELP = "fixed test images through every defense, as PNG"


def add_arguments(parser) -> None:
    add_spec(parser)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument(
        "--defense",
        nargs="+",
        action="append",
        required=True,
        metavar="NAME CLASSIFIER [PURIFIER]",
        help="a defense and its checkpoints; repeat for each defense",
    )
    parser.add_argument("--out", type=Path, required=True)


def run(args) -> None:
    import torch

    from ..data import load_prepared
    from ..diagnostics.pictures import defense_pictures, pictures_figure

    device = setup(args.spec)
    data = load_prepared(args.data)
    positions = args.spec["diagnostics"]["pictures"]["images"]
    x_all, y_all, _ = evaluation_subset(data, args.spec, max(positions) + 1)
    chosen = torch.tensor(positions)
    pictures = {}
    for name, classifier, *purifier in args.defense:
        built = SimpleNamespace(
            data=args.data,
            defense=name,
            classifier=Path(classifier),
            purifier=Path(purifier[0]) if purifier else None,
            custom_defense=None,  # custom defenses are not pictured (rules/diagnostics_common.smk)
        )
        defense, _ = diagnostic_defense(args.spec, built, device)
        attack, _ = diagnostic_attack(args.spec, defense, data.num_classes)
        pictures[name] = defense_pictures(defense, attack, x_all[chosen], y_all[chosen], args.spec["seed"])
    pictures_figure(pictures, args.out)
    log.info("pictures of %d images through %d defenses: %s", len(positions), len(pictures), args.out)
