"""``python -m atop prepare-data``."""

from __future__ import annotations

import logging
from pathlib import Path

from ._common import add_spec

log = logging.getLogger("atop")

HELP = "build the split dataset file and its manifest"


def add_arguments(parser) -> None:
    add_spec(parser)
    parser.add_argument("--out-data", type=Path, required=True)
    parser.add_argument("--out-manifest", type=Path, required=True)


def run(args) -> None:
    from ..data import prepare_dataset
    from ..io import write_json

    manifest = prepare_dataset(args.spec["data"], args.out_data)
    write_json(args.out_manifest, manifest)
    log.info("prepared %s: %s", args.spec["data"]["dataset"], manifest["sizes"])
