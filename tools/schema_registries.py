"""The parts of config/schema.yaml that name registry entries, generated from the registries.

An attack, a defense kind, a dataset, a classifier or purifier architecture, a random transform, a
fine-tuning attack or a scoring protocol is added where its code lives (its registry entry); the
schema's lists of names, the defense-name pattern, and each attack's required and refused parameters
(read from its builder's signature) are written here from those registries, and the evaluation's default
EOT from ``attack_catalog.DEFAULT_EOT``, between marker comments:

    # >>> generated: <block> (python tools/schema_registries.py)
    ...
    # <<< generated

Everything else in the schema (descriptions, defaults, the parameters' own types) is hand-written.

    python tools/schema_registries.py           # rewrite config/schema.yaml's generated blocks
    python tools/schema_registries.py --check   # exit 1 if one is out of date (make lint)

A repository tool, like tools/dvc_pipeline.py: it imports atop (and torch) from its own checkout.
"""

from __future__ import annotations

import argparse
import inspect
import re
import sys
from collections.abc import Callable
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))  # this checkout's atop

BEGIN = re.compile(r"^(?P<indent> *)# >>> generated: (?P<block>[\w ]+?) \(python tools/schema_registries\.py\)$")
END = "# <<< generated"


def _flow(values) -> str:
    return "[" + ", ".join(values) + "]"


def _enum(names: Callable[[], list[str]]) -> Callable[[dict], list[str]]:
    return lambda schema: [f"enum: {_flow(names())}"]


def _attacks():
    from atop.attacks import ATTACKS

    return ATTACKS


def attack_parameter_rules(schema: dict) -> list[str]:
    """One if/then per attack: the parameters its builder requires, and the schema's attack parameters
    it does not take (refused: a typo'd or misplaced key is an error, not silently dropped)."""
    from atop.attacks import config_parameters

    attack = schema["$defs"]["attack"]
    settable = [name for name in attack["properties"] if name not in ("method", "defenses")]
    lines = ["allOf:"]
    for method in _attacks().names():
        params = config_parameters(method)
        unknown = sorted(set(params) - set(settable))
        if unknown:
            raise SystemExit(
                f"error: attack {method!r} takes {unknown}, which $defs.attack.properties does not describe: "
                "add each there (its type and a description)"
            )
        required = [name for name, p in params.items() if p.default is inspect.Parameter.empty]
        refused = [name for name in settable if name not in params]
        lines += [f"  - if: {{properties: {{method: {{const: {method}}}}}}}", "    then:"]
        if required:
            lines.append(f"      required: {_flow(required)}")
        if refused:
            lines.append("      properties: {" + ", ".join(f"{name}: {{not: {{}}}}" for name in refused) + "}")
    return lines


def defense_pattern(schema: dict) -> list[str]:
    """A defense name: a kind without variants, or a kind with variants and an optional ``-<variant>``."""
    from atop.defense_kinds import DEFENSES, KIND_ORDER

    plain = [kind for kind in KIND_ORDER if DEFENSES[kind].variants_from is None]
    varied = [kind for kind in KIND_ORDER if DEFENSES[kind].variants_from is not None]
    variant = "-[A-Za-z0-9][A-Za-z0-9_.-]{0,58}"
    return [f'pattern: "^({"|".join(plain)}|({"|".join(varied)})({variant})?)$"']


def _value(module: str, name: str):
    return getattr(__import__(module, fromlist=[name]), name)


def _names(module: str, registry: str) -> Callable[[], list[str]]:
    def names() -> list[str]:
        entries = _value(module, registry)
        return list(entries.names()) if hasattr(entries, "names") else list(entries)

    return names


# block name -> its lines (without the block's indentation), from the schema as it stands
BLOCKS: dict[str, Callable[[dict], list[str]]] = {
    "datasets": _enum(_names("atop.data", "DATASETS")),
    "classifiers": _enum(_names("atop.models", "CLASSIFIERS")),
    "purifiers": _enum(_names("atop.models", "PURIFIERS")),
    "transforms": _enum(_names("atop.transforms", "TRANSFORMS")),
    "finetune attacks": _enum(_names("atop.finetune_attacks", "FINETUNE_ATTACKS")),
    "attack methods": _enum(lambda: _attacks().names()),
    "attack parameters": attack_parameter_rules,
    "defense names": defense_pattern,
    "default eot": lambda schema: [f"default: {_value('atop.attack_catalog', 'DEFAULT_EOT')}"],
    "protocol jobs": lambda schema: [f"items: {{enum: {_flow(_names('atop.protocols', 'JOB_PROTOCOLS')())}}}"],
}


def generate(text: str) -> str:
    """``text`` (config/schema.yaml) with every generated block written anew; each block appears once."""
    schema = yaml.safe_load(text)
    lines, out, seen, index = text.splitlines(), [], set(), 0
    while index < len(lines):
        line = lines[index]
        out.append(line)
        index += 1
        match = BEGIN.match(line)
        if not match:
            continue
        block, indent = match["block"], match["indent"]
        if block not in BLOCKS:
            raise SystemExit(f"error: unknown generated block {block!r}; known: {', '.join(BLOCKS)}")
        if block in seen:
            raise SystemExit(f"error: generated block {block!r} appears twice")
        seen.add(block)
        while index < len(lines) and lines[index].strip() != END:
            index += 1
        if index == len(lines):
            raise SystemExit(f"error: generated block {block!r} has no '{END}' line")
        out += [indent + generated for generated in BLOCKS[block](schema)]
        out.append(lines[index])
        index += 1
    missing = set(BLOCKS) - seen
    if missing:
        raise SystemExit(f"error: config/schema.yaml lacks the generated blocks {sorted(missing)}")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python tools/schema_registries.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--schema", type=Path, default=REPO / "config" / "schema.yaml")
    parser.add_argument("--check", action="store_true", help="only report whether the generated blocks are current")
    args = parser.parse_args(argv)
    current = args.schema.read_text()
    text = generate(current)
    if args.check:
        if text != current:
            print(f"{args.schema} is out of date: run `python tools/schema_registries.py`", file=sys.stderr)
            return 1
        print(f"{args.schema.name}: generated blocks up to date")
        return 0
    if text != current:
        from atop.io import write_text

        write_text(args.schema, text)
        print(f"wrote {args.schema}")
    else:
        print(f"{args.schema.name}: unchanged")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
