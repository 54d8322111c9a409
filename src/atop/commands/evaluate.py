"""``python -m atop evaluate``: one attack on one defense -> one JSON."""

from __future__ import annotations

from ..config import resolve_numbers
from ._common import add_defense_arguments, defense_from_args, defense_inputs, fast_path, setup

HELP = "run one attack on one defense"


def add_arguments(parser) -> None:
    add_defense_arguments(parser, attack=True)


def run(args) -> None:
    from ..data import load_prepared
    from ..defense import fast_defense
    from ..evaluate import evaluate_defense
    from ..io import sha256_file, write_json
    from ..provenance import provenance

    device = setup(args.spec)
    spec = args.spec
    attack_spec = resolve_numbers(spec["attack"])
    data = load_prepared(args.data)
    defense, built_from = defense_from_args(args, spec["seed"])
    fast = fast_path(spec, "evaluation", device)
    defense = fast_defense(defense.to(device), fast, device)
    protocol = spec.get("protocol")
    if protocol is not None:  # a scoring protocol with a job of its own (protocols.py)
        from ..protocols import protocol_defense

        defense = protocol_defense(protocol["name"], defense, spec["seed"], protocol.get("copies", 1))
    result = evaluate_defense(
        defense,
        args.defense,
        args.attack,
        attack_spec,
        data,
        spec["evaluation"],
        spec["seed"],
        finetune_attack=spec.get("finetune_attack"),
    )
    result["performance"] = fast.record()
    result["precision"] = fast.precision
    result |= built_from  # kind, variant, purifier arch and RT: the report reads them, not just the name
    if "sweep" in spec:
        result["sweep"] = spec["sweep"]
    if protocol is not None:
        result["protocol"] = protocol
    inputs = defense_inputs(args)
    result["experiment"] = spec["experiment"]
    result["provenance"] = provenance(device, {name: sha256_file(path) for name, path in inputs.items()})
    write_json(args.out, result)
