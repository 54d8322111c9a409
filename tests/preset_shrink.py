"""A paper preset shrunk in size only: every path it takes, run in minutes on a CPU.

``shrink_preset`` keeps the preset's rules, dataset, defenses, attacks, transforms, purifier
architectures and sweeps, and shrinks what only costs time: every key named in ``SHRINK``, wherever
it appears in the config, goes to the size the table gives (never up). Settings a preset leaves at
their defaults are shrunk too: the schema's defaults (the diagnostics' images and draws) are filled
in first, and budgets the registries hold (AutoAttack's 100 steps and 5000 Square queries,
DeepFill's discriminator width) are read from the attack and architecture registries. Keys the table
does not name are left alone, so new keys pass through at full size until a line is added here.

By hand, with the upstream archives in data/raw (or downloaded there on the first run):

    python tests/preset_shrink.py config/paper/cifar10.yaml > smoke.yaml
    snakemake --cores 2 all --configfile smoke.yaml    # results/paper-cifar10-smoke/

``--cover`` also keeps only enough defenses to take every path once (see ``covering_defenses``).
"""

from __future__ import annotations

import argparse
import copy
import inspect
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "config" / "schema.yaml"
sys.path.insert(0, str(REPO / "src"))

from atop.attacks import config_parameters
from atop.defense_kinds import split_defense
from atop.models.classifiers import CLASSIFIERS
from atop.models.purifiers import PURIFIERS


def _at_most(size: int) -> Callable[[int], int]:
    return lambda value: min(value, size)


def shrink_image_size(value: int) -> int:
    """Sizes up to 32 px are kept (CIFAR's own); larger ones become a seventh (224 -> 32), rounded up
    to a multiple of 16 (DeepFill needs multiples of 8), so a purifier's 256 px (-> 48) still differs
    from the data's 224 px (-> 32) and the resize path stays."""
    return value if value <= 32 else max(32, 16 * math.ceil(value / 7 / 16))


# What is shrunk, by key (in any section), and to what. Two epochs, so per-epoch schedules and the
# CE term's switch at finetune.ce_start_epoch (kept at most 1) both happen; two steps and EOT 2, so
# the loops iterate; eight images per evaluation, sixteen in the test split and per batch.
SHRINK: dict[str, Callable[[int], int]] = {
    "epochs": _at_most(2),
    "epoch_images": _at_most(16),
    "val_samples": _at_most(8),
    "train_images": _at_most(8),  # the overfitting monitors' fixed batches
    "val_images": _at_most(8),
    "points": _at_most(4),  # decision-boundary distortion's segment points
    "n_images": _at_most(4),  # the diagnostics' images (gradient concentration, measures, distortion)
    "reference_draws": _at_most(4),  # gradient concentration's reference mean (at least its draws)
    "flatness_draws": _at_most(2),  # weight perturbations per network
    "val_steps": _at_most(2),
    "ce_start_epoch": _at_most(1),
    "steps": _at_most(2),
    "eot": _at_most(2),
    "n_queries": _at_most(8),
    "n_samples": _at_most(8),
    "draws": _at_most(2),
    "check_draws": _at_most(2),
    "gradient_samples": _at_most(4),
    "eps_zero_samples": _at_most(4),
    "batch_size": _at_most(16),
    "val_size": _at_most(8),
    "test_size": _at_most(16),
    "channels": _at_most(4),
    "discriminator_channels": _at_most(4),
    "base_channels": _at_most(4),
    "width": _at_most(4),
    "image_size": shrink_image_size,
}
# Thresholds calibrated on hundreds of images are noise on eight: relaxed so the check runs and
# cannot fail the smoke run (its verdict means nothing at this size).
RELAX = {"max_clean_drop": 1.0}
# Classifiers with no width knob (WRN-28-10: ~7 s per forward/backward of 8 images on a CPU) run as
# the smallest network of the same family and code path: WRN-10-1. ResNets keep their arch (and stem).
CLASSIFIER_STAND_INS = {
    "wrn_28_10": ("wide_resnet", {"depth": 10, "widen_factor": 1}),
    "wrn_70_16": ("wide_resnet", {"depth": 10, "widen_factor": 1}),
}
# The architectures' width parameters (their image_size comes from the data, not arch_params).
WIDTHS = ("channels", "discriminator_channels", "base_channels", "width")


def _shrink_tree(node):
    if isinstance(node, list):
        return [_shrink_tree(item) for item in node]
    if not isinstance(node, dict):
        return node
    shrunk = {}
    for key, value in node.items():
        if key in SHRINK and isinstance(value, int) and not isinstance(value, bool):
            shrunk[key] = SHRINK[key](value)
        elif key in RELAX and isinstance(value, (int, float)) and not isinstance(value, bool):
            shrunk[key] = RELAX[key]
        else:
            shrunk[key] = _shrink_tree(value)
    return shrunk


def _shrunk_defaults(parameters: dict[str, inspect.Parameter], given: dict, names=SHRINK) -> dict:
    """The shrunk default of every parameter in ``names`` that ``given`` leaves at its default."""
    return {
        name: SHRINK[name](p.default)
        for name, p in parameters.items()
        if name in names and name not in given and isinstance(p.default, int) and not isinstance(p.default, bool)
    }


def _shrink_arch_params(builder, params: dict) -> dict:
    """Widths an architecture takes but the preset leaves at their defaults, shrunk."""
    return params | _shrunk_defaults(dict(inspect.signature(builder).parameters), params, WIDTHS)


def _shrink_sweep(sweep: dict) -> dict:
    values = [sweep["values"][0], sweep["values"][-1]]
    rule = SHRINK.get(sweep["param"])
    if rule is not None:  # a swept budget (steps, eot): its last point shrunk, the first just below
        top = rule(values[-1])
        values = [min(values[0], top - 1), top]
    return {**sweep, "values": values}


def _matches(defense: str, selector: str) -> bool:
    return defense == selector or split_defense(defense)[0] == selector


def path_features(config: dict, defense: str) -> set[tuple]:
    """What running ``defense`` exercises: its kind, its purifier's settings (all but the pre-training
    recipe), and the filtered attacks and the sweeps that select it."""
    evaluation = config["evaluation"]
    kind, variant = split_defense(defense)
    features: set[tuple] = {("kind", kind)}
    if variant is None and kind in ("ap", "atop") and len(config.get("purifiers", {})) == 1:
        variant = next(iter(config["purifiers"]))
    for key, value in config.get("purifiers", {}).get(variant, {}).items():
        if key != "pretrain":
            features.add(("purifier", key, json.dumps(value, sort_keys=True)))
    for name, attack in evaluation["attacks"].items():
        if "defenses" in attack and any(_matches(defense, s) for s in attack["defenses"]):
            features.add(("attack", name))
    for name, sweep in evaluation.get("sweeps", {}).items():
        if any(_matches(defense, s) for s in sweep.get("defenses", evaluation["defenses"])):
            features.add(("sweep", name))
    if any(_matches(defense, s) for s in (evaluation.get("protocols") or {}).get("defenses", [])):
        features.add(("protocols",))
    return features


def covering_defenses(config: dict) -> list[str]:
    """A small subset of the evaluated defenses that takes every path (``path_features``) at least
    once: greedy set cover, ties broken by the preset's order; returned in the preset's order."""
    defenses = config["evaluation"]["defenses"]
    features = {d: path_features(config, d) for d in defenses}
    uncovered = set().union(*features.values())
    chosen: list[str] = []
    while uncovered:
        best = max(defenses, key=lambda d: (len(features[d] & uncovered), -defenses.index(d)))
        chosen.append(best)
        uncovered -= features[best]
    return [d for d in defenses if d in chosen]


def _keep_defenses(config: dict, keep: list[str]) -> None:
    evaluation = config["evaluation"]
    evaluation["defenses"] = keep
    protocols = [evaluation["protocols"]] if evaluation.get("protocols") else []
    for section in (*evaluation["attacks"].values(), *evaluation.get("sweeps", {}).values(), *protocols):
        if "defenses" in section:
            section["defenses"] = [s for s in section["defenses"] if any(_matches(d, s) for d in keep)]
    if protocols and not protocols[0]["defenses"]:
        del evaluation["protocols"]


def with_schema_defaults(preset: dict) -> dict:
    """A copy of ``preset`` with every default of config/schema.yaml written in (as the workflow's own
    validation fills them), so a size the preset leaves at its default is shrunk too. Schema errors
    are not raised here: keys the schema does not know pass through (the tests validate the result)."""
    import jsonschema

    base = jsonschema.Draft202012Validator

    def properties_with_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if "default" in subschema:
                    instance.setdefault(name, copy.deepcopy(subschema["default"]))
        yield from base.VALIDATORS["properties"](validator, properties, instance, schema)

    filler = jsonschema.validators.extend(base, {"properties": properties_with_defaults})
    config = copy.deepcopy(preset)
    for _ in filler(yaml.safe_load(SCHEMA.read_text())).iter_errors(config):
        pass
    return config


def keep_attacks(config: dict, keep: tuple[str, ...]) -> None:
    """Evaluate only the attacks named in ``keep`` (the config's names), and no sweep."""
    evaluation = config["evaluation"]
    unknown = set(keep) - set(evaluation["attacks"])
    if unknown:
        raise ValueError(f"{config['experiment']} has no attacks {sorted(unknown)}")
    evaluation["attacks"] = {name: attack for name, attack in evaluation["attacks"].items() if name in keep}
    evaluation.pop("sweeps", None)


def shrink_preset(preset: dict, cover: bool = False, attacks: tuple[str, ...] | None = None) -> dict:
    """``preset`` shrunk in size (``SHRINK``), its experiment renamed ``<name>-smoke``; with ``cover``,
    only the defenses ``covering_defenses`` picks are evaluated; with ``attacks``, only those attacks
    and no sweep (before the cover is chosen, so it covers what remains)."""
    config = _shrink_tree(with_schema_defaults(preset))
    config["experiment"] = f"{preset['experiment']}-smoke"
    classifier = config["classifier"]
    if classifier["arch"] in CLASSIFIER_STAND_INS:
        classifier["arch"], classifier["arch_params"] = CLASSIFIER_STAND_INS[classifier["arch"]]
    classifier["arch_params"] = _shrink_arch_params(CLASSIFIERS[classifier["arch"]], classifier.get("arch_params", {}))
    for purifier in config.get("purifiers", {}).values():
        purifier["arch_params"] = _shrink_arch_params(PURIFIERS[purifier["arch"]], purifier.get("arch_params", {}))
    evaluation = config["evaluation"]
    for attack in evaluation["attacks"].values():
        attack |= _shrunk_defaults(config_parameters(attack["method"]), attack)
    for name, sweep in evaluation.get("sweeps", {}).items():
        evaluation["sweeps"][name] = _shrink_sweep(sweep)
    # The scoring protocols' jobs take the evaluation's code path on a wrapped defense; the worked example
    # (config/examples/custom-defense.yaml) runs them end to end, the dry runs list the presets' own.
    evaluation.pop("protocols", None)
    if attacks is not None:
        keep_attacks(config, attacks)
    if cover:
        _keep_defenses(config, covering_defenses(config))
    return config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("preset", type=Path, help="a paper preset, e.g. config/paper/cifar10.yaml")
    parser.add_argument("--cover", action="store_true", help="evaluate only a covering subset of the defenses")
    parser.add_argument("--attacks", nargs="+", help="evaluate only these attacks (the preset's names), no sweep")
    args = parser.parse_args()
    attacks = tuple(args.attacks) if args.attacks else None
    shrunk = shrink_preset(yaml.safe_load(args.preset.read_text()), cover=args.cover, attacks=attacks)
    print(yaml.safe_dump(shrunk, sort_keys=False), end="")


if __name__ == "__main__":
    main()
