"""What every command shares: the ``--spec`` argument, the repeated argument blocks, the device
and seed set-up, and the fast path."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from .. import __version__

log = logging.getLogger("atop")


def parse_spec(text: str) -> dict:
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"--spec is not valid JSON: {error}") from error
    if not isinstance(spec, dict):
        raise argparse.ArgumentTypeError("--spec must be a JSON object")
    return spec


def parse_custom(text: str) -> dict:
    try:
        entry = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"--custom-defense is not valid JSON: {error}") from error
    if not isinstance(entry, dict) or not {"name", "factory", "randomized"} <= set(entry):
        raise argparse.ArgumentTypeError("--custom-defense must be a JSON object with name, factory and randomized")
    return entry


def defense_from_args(args, seed: int):
    """The defense a command's ``--defense`` and checkpoints name, its checkpoints checked against ``--data``."""
    from ..defense import build_defense
    from ..io import load_checkpoint, require_same_data, sha256_file

    data_sha = sha256_file(args.data)
    for checkpoint in filter(None, (args.classifier, args.purifier)):
        require_same_data(load_checkpoint(checkpoint)[1], args.data, data_sha, checkpoint)
    return build_defense(args.defense, args.classifier, args.purifier, seed=seed, custom=args.custom_defense)


def defense_inputs(args) -> dict:
    """The files a command's defense was built from, by role (for the result's provenance)."""
    from ..custom_defenses import parse_factory

    inputs = {"data": args.data}
    for role in ("classifier", "purifier"):
        if getattr(args, role):
            inputs[role] = getattr(args, role)
    entry = args.custom_defense
    if entry:
        factory = parse_factory(entry["factory"], "--custom-defense factory")
        if factory.is_file:
            inputs["factory"] = factory.source
        if entry.get("weights"):
            inputs["weights"] = entry["weights"]["path"]
    return inputs


def add_spec(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--spec", type=parse_spec, required=True)


def add_defense_arguments(parser: argparse.ArgumentParser, attack: bool = False) -> None:
    """A command on one defense (an evaluation, a diagnostic): its spec, data, checkpoints and output."""
    add_spec(parser)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--defense", required=True)
    if attack:
        parser.add_argument("--attack", required=True, help="the attack's name in the config")
    parser.add_argument(
        "--classifier", type=Path, help="classifier checkpoint (every defense but a classifier-free custom one)"
    )
    parser.add_argument("--purifier", type=Path, help="purifier checkpoint, for defenses that have one")
    parser.add_argument(
        "--custom-defense", type=parse_custom, help="a custom defense's config entry as JSON (custom_defenses.py)"
    )
    parser.add_argument("--out", type=Path, required=True)


def setup(spec: dict):
    import torch

    from ..provenance import pick_device

    device = pick_device(spec.get("device", "auto"))
    torch.manual_seed(spec.get("seed", 0))
    log.info("atop %s on %s, %d CPU threads", __version__, device, torch.get_num_threads())
    return device


def fast_path(spec: dict, phase: str, device):
    """The phase's (training or evaluation) speed settings, with TF32 switched on or off for the whole process."""
    from ..fastpath import FastPath

    fast = FastPath.resolve(spec.get("performance"), phase, device)
    fast.apply_backends()
    log.info("%s fast path: %s", phase, fast.record())
    return fast
