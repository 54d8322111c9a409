"""Config checks the JSON Schema cannot express, and budget parsing.

Torch-free on purpose: the Snakefile imports it while building the DAG.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from .attack_catalog import L2_METHODS  # attacks whose budget is an L2 radius (may exceed 1)
from .custom_defenses import check_custom_defenses
from .defense_kinds import DEFENSES, split_defense
from .errors import ConfigError

_FRACTION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(\d+(?:\.\d+)?)\s*$")
BUDGET_KEYS = ("eps", "alpha")


def number(value):
    """Budgets may be written as fractions such as ``"8/255"`` in the config."""
    if isinstance(value, str):
        match = _FRACTION.match(value)
        if not match or float(match.group(2)) == 0:
            raise ConfigError(f"{value!r} is neither a number nor a fraction like '8/255'")
        return float(match.group(1)) / float(match.group(2))
    return value


def resolve_numbers(params: dict) -> dict:
    return {k: number(v) if k in BUDGET_KEYS else v for k, v in params.items()}


def check_config(config: dict) -> None:
    """Raise :class:`ConfigError` naming the key for what the schema let through."""
    budgets = {f"finetune.{k}": config["finetune"].get(k) for k in BUDGET_KEYS}
    budgets |= {f"adversarial_training.{k}": config.get("adversarial_training", {}).get(k) for k in BUDGET_KEYS}
    for name, attack in config["evaluation"]["attacks"].items():
        if attack["method"] in L2_METHODS or attack.get("norm") == "L2":
            continue
        budgets |= {f"evaluation.attacks.{name}.{k}": attack.get(k) for k in BUDGET_KEYS}
    for key, value in budgets.items():
        if value is None:
            continue
        resolved = _keyed_number(key, value)
        if not 0 <= resolved <= 1:
            raise ConfigError(f"{key} = {value!r} is {resolved:.4g}, outside the [0, 1] pixel scale")
    attacks = config["evaluation"]["attacks"]
    for name, sweep in config["evaluation"].get("sweeps", {}).items():
        key = f"evaluation.sweeps.{name}"
        if sweep["attack"] not in attacks:
            raise ConfigError(f"{key}.attack = {sweep['attack']!r} is not in evaluation.attacks ({', '.join(attacks)})")
        if sweep["param"] not in attacks[sweep["attack"]]:
            raise ConfigError(f"{key}.param = {sweep['param']!r}: attack {sweep['attack']!r} has no such parameter")
        values = [_keyed_number(f"{key}.values", v) for v in sweep["values"]]
        linf = attacks[sweep["attack"]]["method"] not in L2_METHODS and attacks[sweep["attack"]].get("norm") != "L2"
        if sweep["param"] == "eps" and linf and not all(0 <= v <= 1 for v in values):
            raise ConfigError(f"{key}.values must lie on the [0, 1] pixel scale")
        if sweep["param"] in ("steps", "eot") and not all(isinstance(v, int) and v >= 1 for v in values):
            raise ConfigError(f"{key}.values must be positive integers for {sweep['param']}")
        if values != sorted(values):
            raise ConfigError(f"{key}.values must be in increasing order")
        if sweep.get("scale_alpha"):
            base = attacks[sweep["attack"]]
            if sweep["param"] != "eps" or "alpha" not in base or not _keyed_number(f"{key}.attack eps", base["eps"]):
                raise ConfigError(
                    f"{key}.scale_alpha scales the step with eps: it needs param eps and an attack with eps > 0 and alpha"
                )
        unknown = set(sweep.get("defenses", [])) - set(config["evaluation"]["defenses"])
        if unknown:
            raise ConfigError(f"{key}.defenses {sorted(unknown)} are not in evaluation.defenses")
    size = config["data"].get("image_size")
    for variant, purifier in config.get("purifiers", {}).items():
        grid = purifier.get("transform_params", {}).get("grid")
        if grid is not None and size is not None and grid > size:
            raise ConfigError(
                f"purifiers.{variant}.transform_params.grid = {grid} is larger than data.image_size = {size}"
            )
    _check_defenses(config)
    _check_replicates(config)
    _check_protocols(config)
    _check_verdicts(config)
    _check_data(config)
    _check_provided_files(config)
    check_custom_defenses(config, Path.cwd())


def _keyed_number(key: str, value):
    try:
        return number(value)
    except ConfigError as error:
        raise ConfigError(f"{key}: {error}") from None


# Images of each dataset: (all images, those of the upstream test split; None where the
# test split is drawn at random). What prepare_data's split needs, known before any job.
DATASET_SIZES = {
    "digits": (1797, None),
    "cifar10": (60000, 10000),
    "cifar100": (60000, 10000),
    "imagenette": (13394, 3925),
}
# Datasets whose images have one fixed size (data.py refuses any other data.image_size).
FIXED_IMAGE_SIZE = {"cifar10": 32, "cifar100": 32}


def _check_data(config: dict) -> None:
    """What prepare_data and the evaluation would refuse (or silently shrink) at run time, now."""
    data = config["data"]
    name, val, test = data["dataset"], data.get("val_size"), data.get("test_size")
    size = data.get("image_size")
    if name in FIXED_IMAGE_SIZE and size is not None and size != FIXED_IMAGE_SIZE[name]:
        raise ConfigError(
            f"data.image_size = {size}: {name} images are {FIXED_IMAGE_SIZE[name]}x{FIXED_IMAGE_SIZE[name]}"
        )
    if val is None or test is None or name not in DATASET_SIZES:
        return
    total, upstream_test = DATASET_SIZES[name]
    limit = data.get("limit")
    kept = total if not limit else min(limit, total)
    where = f"the {kept} images data.limit keeps" if limit and limit < total else f"the {total} {name} images"
    if val + test >= kept:
        raise ConfigError(
            f"data.val_size + data.test_size = {val} + {test} = {val + test} leaves no training images of {where}"
        )
    if upstream_test is not None and not limit:
        if test > upstream_test:
            raise ConfigError(
                f"data.test_size = {test} exceeds the {upstream_test} images of {name}'s upstream test split"
            )
        if val >= total - upstream_test:
            raise ConfigError(
                f"data.val_size = {val} leaves none of the {total - upstream_test} upstream training images of {name}"
            )
    evaluation = config["evaluation"]
    counts = {"evaluation.n_samples": evaluation.get("n_samples")}
    counts |= {f"evaluation.sweeps.{k}.n_samples": s.get("n_samples") for k, s in evaluation.get("sweeps", {}).items()}
    for key, n in counts.items():
        if n is not None and n > test:
            raise ConfigError(
                f"{key} = {n} exceeds data.test_size = {test}: only {test} test images exist to score "
                f"(lower {key} or raise data.test_size)"
            )


def _check_provided_files(config: dict) -> None:
    """User-provided weights the training jobs would load: they must exist before any job runs."""
    provided = {"classifier.pretrained.path": (config["classifier"].get("pretrained") or {}).get("path")}
    for variant, purifier in config.get("purifiers", {}).items():
        provided[f"purifiers.{variant}.init_weights.path"] = (purifier.get("init_weights") or {}).get("path")
    for key, path in provided.items():
        if path is not None and not Path(path).is_file():
            raise ConfigError(f"{key} = {path!r}: no such file")


def gpu_visible() -> bool:
    """Whether this machine shows an NVIDIA GPU to its processes, without importing torch (DAG time)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    return Path("/dev/nvidia0").exists() or shutil.which("nvidia-smi") is not None


def check_device(config: dict, gpu: bool | None = None) -> None:
    """A ``cuda`` device the jobs would not find is refused before any job (jobs run on this machine)."""
    device = config.get("device", "auto")
    if device.startswith("cuda") and not (gpu_visible() if gpu is None else gpu):
        raise ConfigError(
            f"device = {device!r}, but this machine shows no CUDA device (no /dev/nvidia0, no nvidia-smi, "
            "or CUDA_VISIBLE_DEVICES is empty): use device: auto (a GPU when there is one) or cpu"
        )


def seed_plan(config: dict, seed: int) -> tuple[list[str], list[str]]:
    """(defenses, attacks) a training seed trains and evaluates.

    The first seed runs everything. Without ``replicates`` so does every other seed; with it,
    the other seeds train and evaluate only the defenses (names or kinds) and attacks it names:
    the replicates the method-level test needs (docs/verdicts.md), while sweeps, checks and
    diagnostics stay on the first seed.
    """
    defenses, attacks = list(config["evaluation"]["defenses"]), list(config["evaluation"]["attacks"])
    replicates = config.get("replicates")
    if replicates is None or int(seed) == int(config["seeds"][0]):
        return defenses, attacks
    return _replicated(config), [a for a in attacks if a in replicates["attacks"]]


def _replicated(config: dict) -> list[str]:
    selectors = config["replicates"]["defenses"]
    return [d for d in config["evaluation"]["defenses"] if d in selectors or split_defense(d)[0] in selectors]


def full_seeds(config: dict) -> list[int]:
    """The seeds that run sweeps, cross-attack checks and diagnostics: all, or the first with ``replicates``."""
    return list(config["seeds"]) if config.get("replicates") is None else list(config["seeds"][:1])


def _check_replicates(config: dict) -> None:
    replicates = config.get("replicates")
    if replicates is None:
        return
    defenses, attacks = config["evaluation"]["defenses"], config["evaluation"]["attacks"]
    unknown = [d for d in replicates["defenses"] if d not in defenses and d not in DEFENSES]
    if unknown:
        raise ConfigError(f"replicates.defenses {unknown} are neither defense kinds nor in evaluation.defenses")
    unknown = [a for a in replicates["attacks"] if a not in attacks]
    if unknown:
        raise ConfigError(f"replicates.attacks {unknown} are not in evaluation.attacks ({', '.join(attacks)})")
    images = replicates.get("n_samples")
    if images is not None and images > config["evaluation"]["n_samples"]:
        raise ConfigError(
            f"replicates.n_samples = {images} exceeds evaluation.n_samples = {config['evaluation']['n_samples']}: "
            "the replicate seeds score the first of the first seed's images"
        )
    chosen = _replicated(config)
    if not chosen:
        raise ConfigError(f"replicates.defenses {replicates['defenses']} select none of evaluation.defenses")
    for attack in replicates["attacks"]:
        if not set(attack_defenses(config, attack)) & set(chosen):
            raise ConfigError(
                f"replicates.attacks: {attack!r} runs on none of the replicated defenses "
                f"({', '.join(chosen)}; evaluation.attacks.{attack}.defenses selects "
                f"{', '.join(attack_defenses(config, attack))})"
            )


def protocol_defenses(config: dict) -> list[str]:
    """The evaluated defenses the protocols compare (names or kinds in evaluation.protocols.defenses)."""
    protocols = config["evaluation"].get("protocols")
    if not protocols:
        return []
    selectors = protocols["defenses"]
    return [d for d in config["evaluation"]["defenses"] if d in selectors or split_defense(d)[0] in selectors]


def _check_protocols(config: dict) -> None:
    protocols = config["evaluation"].get("protocols")
    if not protocols:
        return
    from .attack_catalog import ATTACK_FACTS

    attacks, key = config["evaluation"]["attacks"], "evaluation.protocols"
    if protocols["attack"] not in attacks:
        raise ConfigError(f"{key}.attack = {protocols['attack']!r} is not in evaluation.attacks ({', '.join(attacks)})")
    method = attacks[protocols["attack"]]["method"]
    if not ATTACK_FACTS[method].records_queries:
        recording = sorted(m for m, facts in ATTACK_FACTS.items() if facts.records_queries)
        raise ConfigError(
            f"{key}.attack = {protocols['attack']!r} ({method}) keeps no record of its queries, which the "
            f"while-optimizing protocol needs; use one of the methods {', '.join(recording)}"
        )
    if "selective_eot" in protocols.get("jobs", ["selective_eot"]) and not ATTACK_FACTS[method].selective_eot:
        selective = sorted(m for m, facts in ATTACK_FACTS.items() if facts.selective_eot)
        raise ConfigError(
            f"{key}.jobs runs selective_eot, which attack {protocols['attack']!r} ({method}) does not offer "
            f"(methods with selective EOT: {', '.join(selective)}); leave it out of {key}.jobs"
        )
    unknown = [d for d in protocols["defenses"] if d not in config["evaluation"]["defenses"] and d not in DEFENSES]
    if unknown:
        raise ConfigError(f"{key}.defenses {unknown} are neither defense kinds nor in evaluation.defenses")
    chosen = protocol_defenses(config)
    if not chosen:
        raise ConfigError(f"{key}.defenses {protocols['defenses']} select none of evaluation.defenses")
    missing = [d for d in chosen if d not in attack_defenses(config, protocols["attack"])]
    if missing:
        raise ConfigError(
            f"{key}: attack {protocols['attack']!r} does not run on {missing} (its defenses select others)"
        )


def _check_verdicts(config: dict) -> None:
    from .claims import CLAIMS

    defenses = config["evaluation"]["defenses"]
    taken = {claim.key for claim in CLAIMS} | {"reproduces_paper_numbers"}
    for index, claim in enumerate(config.get("verdicts", {}).get("claims", [])):
        key = f"verdicts.claims[{index}]"
        if claim["key"] in taken:
            raise ConfigError(f"{key}.key = {claim['key']!r} is taken (by the paper's claims or an earlier entry)")
        taken.add(claim["key"])
        for side in ("a", "b"):
            if claim[side] not in defenses:
                raise ConfigError(
                    f"{key}.{side} = {claim[side]!r} is not in evaluation.defenses ({', '.join(defenses)})"
                )
        if claim["a"] == claim["b"]:
            raise ConfigError(f"{key} compares {claim['a']!r} with itself")
    seeds = config.get("seeds", [0])
    if config.get("verdicts", {}).get("decide_on") == "method" and len(seeds) < 2:
        raise ConfigError(
            f"verdicts.decide_on = 'method' needs at least 2 training seeds, but seeds = {seeds}: one seed is one "
            "training run and cannot decide a claim about the method; list several (seeds: [0, 1, 2]) or use "
            "decide_on: auto"
        )


def purifier_variant(config: dict, defense: str) -> str | None:
    """The purifier variant behind a defense name: its suffix, or the only variant for bare ap / atop."""
    kind, variant = split_defense(defense)
    if DEFENSES[kind].purifier_stage is None:
        return None
    return variant or next(iter(config.get("purifiers", {})), None)


def attack_defenses(config: dict, attack: str) -> list[str]:
    """The evaluated defenses one attack runs on: its ``defenses`` entries select by name or by kind."""
    selectors = config["evaluation"]["attacks"][attack].get("defenses")
    defenses = config["evaluation"]["defenses"]
    if selectors is None:
        return list(defenses)
    return [d for d in defenses if d in selectors or split_defense(d)[0] in selectors]


def _check_defenses(config: dict) -> None:
    built: dict[tuple[str, str | None], str] = {}
    for name in config["evaluation"]["defenses"]:
        key = f"evaluation.defenses: {name!r}"
        try:
            kind, variant = split_defense(name)
        except KeyError as error:
            raise ConfigError(f"{key}: {error.args[0]}") from None
        section = DEFENSES[kind].variants_from
        if section is not None:
            entries = config.get(section) or {}
            known = ", ".join(entries) or "none"
            what = "purifier variant" if section == "purifiers" else "entry"
            if variant is None and len(entries) != 1:
                raise ConfigError(
                    f"{key} names no {what}, which only works with exactly one in {section} "
                    f"(there are: {known}); write {kind}-<{'variant' if section == 'purifiers' else 'name'}>"
                )
            if variant is not None and variant not in entries:
                raise ConfigError(f"{key} names {what} {variant!r}, not in {section} ({known})")
            variant = variant or next(iter(entries))
        if (kind, variant) in built:
            raise ConfigError(f"{key} is the same defense as {built[kind, variant]!r}")
        built[kind, variant] = name
    for attack, spec in config["evaluation"]["attacks"].items():
        selectors = spec.get("defenses")
        if selectors is None:
            continue
        key = f"evaluation.attacks.{attack}.defenses"
        unknown = [s for s in selectors if s not in config["evaluation"]["defenses"] and s not in DEFENSES]
        if unknown:
            raise ConfigError(f"{key} {unknown} are neither defense kinds nor in evaluation.defenses")
        if not attack_defenses(config, attack):
            raise ConfigError(f"{key} {selectors} select none of evaluation.defenses")


# --------------------------------------------------------------------------- the config as the user wrote it


def typed_overrides(overrides: dict) -> dict:
    """``--config`` values as YAML, the way the config file reads them (``seeds=[0,1]``: a list of ints).

    Snakemake keeps the strings inside a list or mapping as strings (``['0', '1']``); each string is
    read again as a YAML value (``'8/255'`` stays a string, ``'null'`` becomes None).
    """

    def typed(value):
        if isinstance(value, dict):
            return {k: typed(v) for k, v in value.items()}
        if isinstance(value, list):
            return [typed(v) for v in value]
        if isinstance(value, str):
            import yaml

            try:
                return yaml.safe_load(value) if value.strip() else value
            except yaml.YAMLError:
                return value
        return value

    return {key: typed(value) for key, value in overrides.items()}


def merge(config: dict, overrides: dict) -> None:
    """Nested mappings merge key by key (as Snakemake merges --config); other values replace."""
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            merge(config[key], value)
        else:
            config[key] = value


def _schema_at(schema: dict, path) -> dict:
    """The sub-schema describing the config at ``path`` (properties, additionalProperties, items)."""
    node = schema
    for part in path:
        if isinstance(part, int):
            node = node.get("items", {})
        elif part in node.get("properties", {}):
            node = node["properties"][part]
        elif isinstance(node.get("additionalProperties"), dict):
            node = node["additionalProperties"]
        else:
            return {}
        if "$ref" in node:
            node = schema["$defs"][node["$ref"].rsplit("/", 1)[-1]]
    return node


def _dotted(path) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


def config_errors(config: dict, schema: dict) -> list[str]:
    """Schema violations, one line each, naming the key; an unknown key gets the nearest valid names."""
    import difflib

    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import relevance

    messages, suggested = [], set()
    errors = sorted(Draft202012Validator(schema).iter_errors(config), key=relevance)
    for error in errors:
        path = list(error.absolute_path)
        if error.validator == "additionalProperties" and isinstance(error.instance, dict):
            node = _schema_at(schema, path)
            known = sorted(node.get("properties", {}))
            if not known:  # free names (attacks, purifier variants): jsonschema's own words
                messages.append(f"{_dotted(path)}: {error.message}")
                continue
            for key in sorted(set(error.instance) - set(known)):
                near = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
                suggested |= {_dotted([*path, n]) for n in near}
                hint = f"did you mean {' or '.join(map(repr, near))}?" if near else f"valid keys: {', '.join(known)}"
                where = f"in {_dotted(path)}" if path else "at the top level"
                messages.append(f"unknown key {key!r} {where}; {hint}")
    for error in errors:
        path = list(error.absolute_path)
        if error.validator == "additionalProperties" and isinstance(error.instance, dict):
            continue
        if error.validator == "required":
            missing = [_dotted([*path, k]) for k in error.validator_value if k not in error.instance]
            messages += [f"missing key {key} (required)" for key in missing if key not in suggested]
            continue
        if "propertyNames" in error.schema_path:
            pattern = f" (it must match {error.validator_value})" if error.validator == "pattern" else ""
            messages.append(f"{_dotted(path)}: the name {error.instance!r} is not allowed{pattern}")
            continue
        if error.validator == "enum":
            choices = [str(v) for v in error.validator_value]
            near = difflib.get_close_matches(str(error.instance), choices, n=1)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            messages.append(f"{_dotted(path)} = {error.instance!r} is not one of {', '.join(choices)}{hint}")
            continue
        short = not isinstance(error.instance, (dict, list)) or len(str(error.instance)) < 80
        value = f" = {error.instance!r}" if short else ""
        text = error.message if len(error.message) < 200 else error.message[:200] + "..."
        messages.append(f"{_dotted(path)}{value}: {text}")
    return list(dict.fromkeys(messages))


def check_schema(config: dict, schema_path, source: str, replaced_default: str | None = None) -> None:
    """Raise :class:`ConfigError` with one line per schema violation, naming ``source`` (the file)."""
    import yaml

    schema = yaml.safe_load(Path(schema_path).read_text())
    errors = config_errors(config, schema)
    if not errors:
        return
    lines = [f"{source}: {message}" for message in errors[:5]]
    if len(errors) > 5:
        lines.append(f"... and {len(errors) - 5} more")
    missing = [e for e in errors if e.startswith("missing key ")]
    if len(missing) >= 2 and replaced_default:
        lines.append(
            f"(--configfile replaces {replaced_default}, it is not merged into it: a config file is a whole "
            f"experiment; start from a copy of {replaced_default} and change what differs)"
        )
    raise ConfigError("\n".join(lines))


DEFAULT_CONFIGFILE = "config/config.yaml"


def config_source(workflow) -> tuple[str, str | None]:
    """(what the config was read from, the default file a --configfile replaced or None), for messages."""
    files = []
    for path in workflow.config_settings.configfiles:
        try:
            files.append(str(Path(path).relative_to(Path.cwd())))
        except ValueError:
            files.append(str(path))
    source = ", ".join(files) or DEFAULT_CONFIGFILE
    if workflow.config_settings.config:
        source += f" with --config {' '.join(workflow.config_settings.config)}"
    return source, DEFAULT_CONFIGFILE if files else None


def load_config_file(path) -> dict:
    """A config file as a dict; a YAML syntax error is a :class:`ConfigError` naming the file, line and column."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ConfigError(f"{where}: YAML syntax error: {error.problem or error.context}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: YAML syntax error: {error}") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: a config file is a mapping of keys, not {type(config).__name__}")
    return config


SELECTION_KEYS = ("configfile", "experiment")


def check_selection(path) -> dict:
    """``params.yaml``: the config file ``dvc repro`` builds and the experiment it declares, nothing else.

    DVC itself names neither mistake well: a missing config file reads as "Parameters ... are missing",
    and ``dvc exp run -S +key=value`` (DVC's own hint) writes the key here and runs nothing.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such file; it names the config file DVC builds (configfile) and its experiment")
    selection = load_config_file(path)
    missing = [key for key in SELECTION_KEYS if key not in selection]
    if missing:
        raise ConfigError(
            f"{path}: {', '.join(missing)} missing; it names the config file DVC builds and its experiment"
        )
    unknown = sorted(set(selection) - set(SELECTION_KEYS))
    if unknown:
        raise ConfigError(
            f"{path}: unknown key {', '.join(map(repr, unknown))}: this file holds only configfile and experiment. "
            f"A setting of the experiment goes to its config file: dvc exp run -S "
            f"{selection['configfile']}:{unknown[0]}.<key>=<value> (a -S without the file lands here)"
        )
    configfile = selection["configfile"]
    if not (path.parent / str(configfile)).is_file():  # paths in params.yaml are relative to its folder
        raise ConfigError(f"{path}: configfile {configfile} does not exist")
    named = load_config_file(path.parent / str(configfile)).get("experiment")
    if named != selection["experiment"]:
        raise ConfigError(
            f"{path}: experiment {selection['experiment']!r} but {configfile} declares experiment {named!r}: "
            "set both together (dvc exp run -S configfile=<file> -S experiment=<name>)"
        )
    return selection


def validate_file(path) -> dict:
    """Every check ``snakemake -n`` makes on one config file; the validated config (defaults filled in)."""
    from snakemake.utils import validate

    schema = Path(__file__).resolve().parents[2] / "config" / "schema.yaml"
    config = load_config_file(path)
    check_schema(config, schema, str(path), DEFAULT_CONFIGFILE)
    validate(config, str(schema), set_default=True)
    check_config(config)
    check_device(config)
    from .diagnostics.settings import check_diagnostics  # it imports this module

    check_diagnostics(config)
    return config


def main(argv: list[str] | None = None) -> int:
    """``python -m atop.config FILE...``: every check ``snakemake -n`` makes, with the file and line of a
    YAML syntax error (Snakemake's own message for one names neither). ``--params params.yaml --record
    FILE``: DVC's first stage; checks params.yaml and the config file it names, then records both."""
    import argparse
    import json
    import sys

    parser = argparse.ArgumentParser(prog="python -m atop.config", description=main.__doc__)
    parser.add_argument("configfile", nargs="*", type=Path)
    parser.add_argument("--params", type=Path, help="a DVC params.yaml: check it and the config file it names")
    parser.add_argument("--record", type=Path, help="with --params: write the checked selection here (JSON)")
    args = parser.parse_args(argv)
    if args.record and not args.params:
        parser.error("--record needs --params")
    if not args.configfile and not args.params:
        parser.error("name a config file, or --params params.yaml")
    failed = 0
    if args.params:
        try:
            selection = check_selection(args.params)
            validate_file(args.params.parent / str(selection["configfile"]))
        except ConfigError as error:
            print(f"invalid config: {error}", file=sys.stderr)
            return 1
        if args.record:
            from .io import write_text

            # the selection only: the data stage reads it, so DVC runs this stage first
            write_text(args.record, json.dumps(selection, indent=2, sort_keys=True) + "\n")
        print(f"{args.params}: {selection['configfile']} ({selection['experiment']}) valid")
    for path in args.configfile:
        try:
            validate_file(path)
        except ConfigError as error:
            print(f"invalid config: {error}", file=sys.stderr)
            failed += 1
        else:
            print(f"{path}: valid")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
