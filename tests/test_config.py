"""The config schema, the shipped config, the checks the schema cannot express, and the CLI's --spec."""

from __future__ import annotations

import copy
import inspect
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from atop.attacks import ATTACKS, config_parameters
from atop.config import ConfigError, check_config, number, resolve_numbers
from atop.data import DATASETS
from atop.defense import DEFENSES
from atop.finetune_attacks import FINETUNE_ATTACKS
from atop.models import CLASSIFIERS, PURIFIERS
from atop.transforms import TRANSFORMS

ROOT = Path(__file__).resolve().parents[1]
SCHEMA_PATH = ROOT / "config" / "schema.yaml"
CONFIG_PATH = ROOT / "config" / "config.yaml"


@pytest.fixture(scope="module")
def schema() -> dict:
    return yaml.safe_load(SCHEMA_PATH.read_text())


@pytest.fixture
def config() -> dict:
    """The shipped config, validated and with the schema's defaults filled in."""
    from snakemake.utils import validate

    cfg = yaml.safe_load(CONFIG_PATH.read_text())
    validate(cfg, str(SCHEMA_PATH), set_default=True)
    return cfg


def _validator(schema):
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


# --------------------------------------------------------------------------- schema enums vs registries


def _enum(schema, *path):
    node = schema
    for key in path:
        node = node[key]
    return sorted(node["enum"])


@pytest.mark.parametrize(
    ("path", "registry"),
    [
        (("properties", "data", "properties", "dataset"), DATASETS),
        (("properties", "classifier", "properties", "arch"), CLASSIFIERS),
        (("$defs", "purifier", "properties", "arch"), PURIFIERS),
        (("$defs", "purifier", "properties", "transform"), TRANSFORMS),
        (("$defs", "attack", "properties", "method"), ATTACKS),
        (("properties", "finetune", "properties", "attack"), FINETUNE_ATTACKS),
    ],
    ids=["dataset", "classifier", "purifier", "transform", "attack", "finetune_attack"],
)
def test_schema_enum_equals_registry(schema, path, registry):
    assert _enum(schema, *path) == registry.names()


def test_schema_registry_blocks_are_generated_and_current():
    """config/schema.yaml's registry names and per-attack parameter rules are tools/schema_registries.py's
    output (make lint checks it too); a block edited by hand, removed or doubled is refused."""
    import schema_registries  # tools/ (conftest puts it on the path)

    text = SCHEMA_PATH.read_text()
    assert schema_registries.generate(text) == text, "run python tools/schema_registries.py"
    stale = text.replace("enum: [rt1, rt2, rt3]", "enum: [rt1, rt2]")
    assert schema_registries.generate(stale) == text
    begin = "# >>> generated: transforms (python tools/schema_registries.py)"
    with pytest.raises(SystemExit, match="lacks the generated blocks \\['transforms'\\]"):
        schema_registries.generate(text.replace(begin, "# transforms"))
    with pytest.raises(SystemExit, match="'transforms' appears twice"):
        schema_registries.generate(text.replace(begin, begin + "\n# <<< generated\n" + begin))


def test_schema_refuses_an_attack_parameter_it_does_not_describe(schema, monkeypatch):
    """A builder parameter the schema's attack properties lack is named (its type must be written once)."""
    import schema_registries

    from atop.attack_catalog import ATTACK_FACTS
    from atop.attacks import ATTACKS, register_attack

    monkeypatch.setattr(ATTACKS, "_entries", dict(ATTACKS._entries))
    monkeypatch.setitem(ATTACK_FACTS, "throwaway", ATTACK_FACTS["fgsm"])

    @register_attack("throwaway")
    def throwaway(model, eps: float, momentum: float = 0.9):
        raise AssertionError("not built")

    with pytest.raises(SystemExit, match="'throwaway' takes \\['momentum'\\]"):
        schema_registries.attack_parameter_rules(schema)


def test_schema_defense_pattern_knows_every_kind(schema):
    pattern = schema["$defs"]["defense"]["pattern"]
    for kind in DEFENSES:
        assert re.search(r"\b" + kind + r"\b", pattern), kind
    validator = jsonschema.Draft202012Validator({"$ref": "#/$defs/defense", "$defs": schema["$defs"]})
    for good in ("standard", "at", "ap", "atop", "ap-gan-rt2", "atop-ae.v2_rt3"):
        assert validator.is_valid(good), good
    for bad in ("at-gan", "standard-x", "diffpure", "ap-", "atop--x", "AP-gan"):
        assert not validator.is_valid(bad), bad


def _required_by_method(schema) -> dict[str, set[str]]:
    attack = schema["$defs"]["attack"]
    required = {}
    for rule in attack["allOf"]:
        method = rule["if"]["properties"]["method"]["const"]
        required[method] = set(attack["required"]) | set(rule["then"].get("required", []))
    return required


def test_schema_attack_parameters_match_the_builders(schema):
    """What the schema requires / allows per method is what build_attack requires / accepts."""
    attack = schema["$defs"]["attack"]
    required = _required_by_method(schema)
    assert sorted(required) == ATTACKS.names()
    for method in ATTACKS:
        params = config_parameters(method)
        builder_required = {n for n, p in params.items() if p.default is inspect.Parameter.empty}
        assert required[method] - {"method"} == builder_required, method
        forbidden = {
            name
            for rule in attack["allOf"]
            if rule["if"]["properties"]["method"]["const"] == method
            for name, sub in rule["then"].get("properties", {}).items()
            if sub == {"not": {}}
        }
        allowed = (
            set(attack["properties"]) - {"method", "defenses"} - forbidden
        )  # defenses: which jobs, not a parameter
        assert allowed == set(params), method


# --------------------------------------------------------------------------- the shipped config


def test_shipped_config_validates_with_snakemake_and_fills_defaults(config):
    assert config["seeds"] == [0, 1, 2] and config["replicates"]["defenses"] == ["ap", "atop"]
    assert config["verdicts"] == {"decide_on": "auto", "equivalence_margin": 0.05, "claims": []}
    assert config["classifier"]["weight_decay"] == 0
    assert config["finetune"]["alpha"] == "2/255"
    check_config(config)  # and passes the checks the schema cannot express


def test_shipped_config_validates_with_jsonschema(schema):
    cfg = yaml.safe_load(CONFIG_PATH.read_text())
    errors = list(_validator(schema).iter_errors(cfg))
    assert errors == []


def test_shipped_config_builds_its_attacks(config):
    from torch import nn

    from atop.attacks import build_attack
    from atop.defense import DefendedModel

    model = DefendedModel(nn.Sequential(nn.Flatten(), nn.Linear(3, 2)))
    for name, attack in config["evaluation"]["attacks"].items():
        params = resolve_numbers({k: v for k, v in attack.items() if k not in ("method", "defenses")})
        built = build_attack(attack["method"], model, params, num_classes=2, seed=0, draws=1)
        assert built.eps == pytest.approx(params["eps"]), name


def test_every_attack_is_described_once_and_built_once(schema):
    """The catalog's facts, the builders' registry and the schema's method enum name the same attacks;
    the tables other modules read are derived from the catalog."""
    from atop.attack_catalog import ATTACK_FACTS, L2_METHODS, PARTIAL_GRADIENT_METHODS
    from atop.attacks import ATTACKS, register_attack

    assert set(ATTACKS.names()) == set(ATTACK_FACTS)
    assert set(schema["$defs"]["attack"]["properties"]["method"]["enum"]) == set(ATTACK_FACTS)
    assert L2_METHODS == {name for name in ATTACKS.names() if ATTACKS[name].norm == "L2"} == {"pgd_l2", "cw_l2"}
    assert PARTIAL_GRADIENT_METHODS == {"bpda_eot", "cw_classifier", "pgd_classifier", "square"}
    with pytest.raises(KeyError, match="unknown attack method 'my_attack'"):
        register_attack("my_attack")


@pytest.mark.parametrize(
    ("mutate", "where"),
    [
        pytest.param(lambda c: c["data"].__setitem__("dataset", "mnist"), "dataset", id="dataset"),
        pytest.param(lambda c: c["classifier"].__setitem__("arch", "resnet"), "arch", id="arch"),
        pytest.param(lambda c: c["purifiers"]["gan-rt2"].__setitem__("transform", "rt9"), "transform", id="transform"),
        pytest.param(lambda c: c["evaluation"].__setitem__("defenses", ["standard", "adv"]), "defenses", id="defenses"),
        pytest.param(lambda c: c["evaluation"]["attacks"]["fgsm"].__setitem__("method", "cw"), "method", id="method"),
        pytest.param(lambda c: c["evaluation"]["attacks"]["fgsm"].__setitem__("steps", 3), "steps", id="steps"),
        pytest.param(lambda c: c["evaluation"]["attacks"]["pgd"].pop("alpha"), "alpha", id="alpha"),
        pytest.param(lambda c: c["evaluation"]["attacks"]["pgd"].__setitem__("eps", "8 of 255"), "eps", id="eps"),
        pytest.param(lambda c: c["finetune"].__setitem__("attack", "pgd"), "attack", id="attack"),
        pytest.param(lambda c: c.__setitem__("unknown_key", 1), "unknown_key", id="unknown_key"),
        pytest.param(lambda c: c["classifier"].__setitem__("epochs", 0), "epochs", id="epochs"),
    ],
)
def test_schema_rejects_broken_configs(schema, mutate, where):
    cfg = yaml.safe_load(CONFIG_PATH.read_text())
    mutate(cfg)
    errors = list(_validator(schema).iter_errors(cfg))
    assert errors, f"schema accepted a config with a bad {where}"


def test_snakemake_validate_rejects_unknown_dataset():
    from snakemake.utils import validate

    cfg = yaml.safe_load(CONFIG_PATH.read_text())
    cfg["data"]["dataset"] = "mnist"
    with pytest.raises(Exception, match="mnist"):
        validate(cfg, str(SCHEMA_PATH), set_default=True)


# --------------------------------------------------------------------------- number / check_config


@pytest.mark.parametrize(
    ("value", "expected"),
    [("8/255", 8 / 255), (" 8 / 255 ", 8 / 255), ("0.5/2", 0.25), ("0/255", 0.0), (0.03, 0.03), (1, 1)],
)
def test_number_parses_fractions_and_passes_numbers(value, expected):
    assert number(value) == pytest.approx(expected)


@pytest.mark.parametrize("value", ["8/0", "abc", "", "8/255/2", "-8/255", "0.5", "8 / "])
def test_number_rejects_bad_strings(value):
    with pytest.raises(ConfigError, match="fraction"):
        number(value)


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)


def test_resolve_numbers_only_touches_budgets():
    resolved = resolve_numbers({"method": "pgd_linf", "eps": "8/255", "alpha": "2/255", "steps": 10, "note": "1/2"})
    assert resolved == {
        "method": "pgd_linf",
        "eps": pytest.approx(8 / 255),
        "alpha": pytest.approx(2 / 255),
        "steps": 10,
        "note": "1/2",
    }


def test_check_config_rejects_eps_outside_the_pixel_scale(config):
    config["evaluation"]["attacks"]["pgd"]["eps"] = "300/255"
    with pytest.raises(ConfigError, match=r"evaluation\.attacks\.pgd\.eps"):
        check_config(config)


def test_check_config_rejects_bad_finetune_budget(config):
    config["finetune"]["alpha"] = "2/0"
    with pytest.raises(ConfigError):
        check_config(config)
    config["finetune"]["alpha"] = "2/255"
    config["finetune"]["eps"] = "256/255"
    with pytest.raises(ConfigError, match=r"finetune\.eps"):
        check_config(config)


def test_check_config_rejects_grid_larger_than_image(config):
    config["purifiers"]["gan-rt2"]["transform_params"]["grid"] = 64
    with pytest.raises(ConfigError, match=r"purifiers\.gan-rt2\.transform_params\.grid"):
        check_config(config)


def test_check_config_accepts_edge_budgets(config):
    changed = copy.deepcopy(config)
    changed["evaluation"]["attacks"]["pgd"]["eps"] = "255/255"
    changed["evaluation"]["attacks"]["fgsm"]["eps"] = 0
    check_config(changed)


# --------------------------------------------------------------------------- CLI --spec


EVALUATE_ARGS = [
    "--data",
    "d.pt",
    "--defense",
    "standard",
    "--attack",
    "fgsm",
    "--classifier",
    "c.pt",
    "--out",
    "o.json",
]


def test_cli_rejects_invalid_json_spec(capsys):
    from atop.cli import main

    with pytest.raises(SystemExit) as info:
        main(["evaluate", "--spec", "not json", *EVALUATE_ARGS])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "--spec is not valid JSON" in err


def test_cli_rejects_non_object_spec(capsys):
    from atop.cli import main

    with pytest.raises(SystemExit) as info:
        main(["evaluate", "--spec", "[1, 2]", *EVALUATE_ARGS])
    assert info.value.code == 2
    assert "--spec must be a JSON object" in capsys.readouterr().err


def test_python_m_atop_rejects_invalid_json_spec(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "atop", "evaluate", "--spec", "{not json", *EVALUATE_ARGS],
        capture_output=True,
        check=False,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "--spec is not valid JSON" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "o.json").exists()


def test_check_config_rejects_bad_adversarial_training_budget(config):
    config["adversarial_training"] = {"eps": "300/255", "alpha": "2/255", "steps": 10}
    with pytest.raises(ConfigError, match=r"adversarial_training\.eps"):
        check_config(config)
    config["adversarial_training"]["eps"] = "8/255"
    check_config(config)


def test_schema_accepts_paper_scale_keys(schema):
    cfg = yaml.safe_load(CONFIG_PATH.read_text())
    cfg["data"] |= {"dataset": "cifar10", "raw_dir": "/data/archives", "download": False}
    cfg["classifier"] |= {
        "arch": "wrn_28_10",
        "optimizer": "sgd",
        "schedule": "cosine",
        "augment": True,
        "pretrained": {"path": "Standard.pt", "sha256": "a" * 64},
    }
    cfg["purifiers"]["gan-rt2"] |= {
        "arch": "deepfill_v2",
        "transform": "rt3",
        "image_size": 64,
        "transform_params": {"noise_std": 0.25, "grid": 8, "copies": 4},
    }
    cfg["adversarial_training"] = {"eps": "8/255", "alpha": "2/255", "steps": 10}
    assert list(_validator(schema).iter_errors(cfg)) == []
    cfg["classifier"]["pretrained"] = {"path": "Standard.pt", "sha256": "not-a-hash"}
    assert list(_validator(schema).iter_errors(cfg))


# --------------------------------------------------------------------------- purifier variants and defenses


def _two_variants(config) -> dict:
    config["purifiers"]["ae-rt1"] = {**config["purifiers"]["gan-rt2"], "arch": "ae", "transform": "rt1"}
    config["evaluation"]["defenses"] = ["standard", "at", "ap-gan-rt2", "atop-ae-rt1"]
    for sweep in config["evaluation"]["sweeps"].values():
        sweep["defenses"] = ["standard", "atop-ae-rt1"]
    return config


def test_check_config_accepts_named_variants(config):
    from atop.config import purifier_variant

    config = _two_variants(config)
    check_config(config)
    assert purifier_variant(config, "atop-ae-rt1") == "ae-rt1"
    assert purifier_variant(config, "at") is None


def test_bare_ap_names_the_only_variant(config):
    from atop.config import purifier_variant

    assert purifier_variant(config, "ap") == "gan-rt2" and purifier_variant(config, "atop") == "gan-rt2"


@pytest.mark.parametrize(
    ("defenses", "match"),
    [
        (
            ["standard", "atop-gan-rt9"],
            r"evaluation\.defenses: 'atop-gan-rt9' names purifier variant 'gan-rt9', not in purifiers \(gan-rt2, ae-rt1\)",
        ),
        (["standard", "ap"], r"evaluation\.defenses: 'ap' names no purifier variant.*exactly one.*ap-<variant>"),
        (["ap-gan-rt2", "at-gan-rt2"], r"evaluation\.defenses: 'at-gan-rt2'.*no purifier"),
    ],
)
def test_check_config_rejects_bad_defense_names(config, defenses, match):
    config = _two_variants(config)
    config["evaluation"]["defenses"] = defenses
    config["evaluation"]["sweeps"] = {}
    with pytest.raises(ConfigError, match=match):
        check_config(config)


def test_check_config_rejects_the_same_defense_twice(config):
    config["evaluation"]["defenses"] = ["standard", "atop", "atop-gan-rt2"]
    config["evaluation"]["sweeps"] = {}
    with pytest.raises(ConfigError, match=r"'atop-gan-rt2' is the same defense as 'atop'"):
        check_config(config)


def test_attack_defenses_select_by_name_and_kind(config):
    from atop.config import attack_defenses

    config = _two_variants(config)
    attacks = config["evaluation"]["attacks"]
    attacks["fgsm"]["defenses"] = ["standard", "at"]
    attacks["pgd"]["defenses"] = ["ap", "atop"]
    attacks["pgd_l2"]["defenses"] = ["atop-ae-rt1"]
    check_config(config)
    assert attack_defenses(config, "fgsm") == ["standard", "at"]
    assert attack_defenses(config, "pgd") == ["ap-gan-rt2", "atop-ae-rt1"]
    assert attack_defenses(config, "pgd_l2") == ["atop-ae-rt1"]
    assert attack_defenses(config, "eot_pgd") == config["evaluation"]["defenses"]


@pytest.mark.parametrize(
    ("selection", "match"),
    [
        (["atop-gan-rt9"], r"evaluation\.attacks\.fgsm\.defenses \['atop-gan-rt9'\] are neither defense kinds"),
        (["at"], r"evaluation\.attacks\.fgsm\.defenses \['at'\] select none of evaluation\.defenses"),
    ],
)
def test_check_config_rejects_bad_attack_selection(config, selection, match):
    config["evaluation"]["defenses"] = [d for d in config["evaluation"]["defenses"] if d != "at"]
    config["evaluation"]["attacks"]["fgsm"]["defenses"] = selection
    with pytest.raises(ConfigError, match=match):
        check_config(config)


def test_schema_rejects_bad_variant_name(schema):
    cfg = yaml.safe_load(CONFIG_PATH.read_text())
    cfg["purifiers"]["gan/rt2"] = cfg["purifiers"]["gan-rt2"]
    assert any("gan/rt2" in e.message for e in _validator(schema).iter_errors(cfg))


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"attack": "nope"}, r"evaluation\.sweeps\.eps\.attack = 'nope' is not in evaluation\.attacks"),
        ({"param": "eot"}, r"evaluation\.sweeps\.eps\.param = 'eot': attack 'pgd' has no such parameter"),
        ({"values": ["32/255", 0]}, r"evaluation\.sweeps\.eps\.values must be in increasing order"),
        ({"values": [0, "300/255"]}, r"evaluation\.sweeps\.eps\.values must lie on the \[0, 1\] pixel scale"),
        ({"attack": "fgsm"}, r"evaluation\.sweeps\.eps\.scale_alpha scales the step with eps: it needs .*alpha"),
        ({"param": "steps", "values": [5, 10]}, r"scale_alpha scales the step with eps: it needs param eps"),
    ],
)
def test_check_config_rejects_bad_sweeps(config, change, match):
    config["evaluation"]["sweeps"]["eps"].update(change)
    with pytest.raises(ConfigError, match=match):
        check_config(config)


def test_the_default_scores_one_subset_of_its_test_split_sized_as_documented(config):
    """benchmarks/README "Sizing": 256 of the 397 test digits in every attack job (320 took 465 s, over 420 s)."""
    from atop.evaluate import sample_indices

    evaluation, test_size = config["evaluation"], config["data"]["test_size"]
    assert (evaluation["n_samples"], test_size) == (256, 397)
    assert not any("n_samples" in attack for attack in evaluation["attacks"].values())  # one subset for every attack
    subset = sample_indices(test_size, evaluation["n_samples"], evaluation["sample_seed"])
    assert len(set(subset.tolist())) == 256 and 0 <= int(subset.min()) and int(subset.max()) < test_size
    for sweep in evaluation["sweeps"].values():  # a sweep's smaller subset lies inside the attacks' one
        inner = sample_indices(test_size, sweep.get("n_samples", evaluation["n_samples"]), evaluation["sample_seed"])
        assert set(inner.tolist()) <= set(subset.tolist())


# --------------------------------------------------------------------------- verdicts (docs/verdicts.md)


@pytest.mark.parametrize(
    ("verdicts", "where"),
    [
        ({"equivalence_margin": 0}, "equivalence_margin"),
        ({"equivalence_margin": 0.75}, "equivalence_margin"),
        ({"equivalence_margin": "5 pp"}, "equivalence_margin"),
        ({"decide_on": "models"}, "decide_on"),
        ({"decide_on_method": True}, "decide_on_method"),
    ],
)
def test_schema_rejects_bad_verdict_settings(schema, verdicts, where):
    cfg = yaml.safe_load(CONFIG_PATH.read_text())
    cfg["verdicts"] = verdicts
    errors = list(_validator(schema).iter_errors(cfg))
    assert errors and any(where in str(e.path) or where in e.message for e in errors), errors


def test_a_method_verdict_asked_of_one_seed_is_refused(config):
    config["verdicts"] = {"decide_on": "method"}
    config["seeds"] = [0]
    with pytest.raises(ConfigError, match=r"verdicts.decide_on = 'method' needs at least 2 training seeds.*\[0\]"):
        check_config(config)
    config["seeds"] = [0, 1]
    check_config(config)
    config["verdicts"] = {"decide_on": "these_models"}
    config["seeds"] = [0]
    check_config(config)


@pytest.mark.workflow
def test_a_method_verdict_of_one_seed_fails_the_dry_run_before_any_job(workflow_dir):
    from conftest import run_snakemake, write_config

    cfg = yaml.safe_load(CONFIG_PATH.read_text())
    cfg["verdicts"] = {"decide_on": "method"}
    cfg["seeds"], cfg["replicates"] = [0], None
    path = write_config(workflow_dir, cfg)
    done = run_snakemake(workflow_dir, "-n", "all", "--configfile", str(path), timeout=300)
    assert done.returncode != 0
    assert "verdicts.decide_on = 'method' needs at least 2 training seeds" in done.stdout + done.stderr
    assert not (workflow_dir / "results").exists()


@pytest.mark.parametrize(
    ("replicates", "match"),
    [
        ({"defenses": ["atop-gan"], "attacks": ["eot_pgd"]}, r"replicates.defenses \['atop-gan'\]"),
        ({"defenses": ["atop"], "attacks": ["autoattack"]}, r"replicates.attacks \['autoattack'\] are not in"),
        ({"defenses": ["standard"], "attacks": ["square"]}, r"'square' runs on none of the replicated defenses"),
    ],
)
def test_check_config_rejects_bad_replicates(config, replicates, match):
    config["seeds"] = [0, 1, 2]
    config["replicates"] = replicates
    with pytest.raises(ConfigError, match=match):
        check_config(config)


def test_replicates_score_the_first_images_of_the_first_seeds_subset():
    from atop.evaluate import sample_indices

    first, replicate = sample_indices(397, 256, 0), sample_indices(397, 128, 0)
    assert set(replicate.tolist()) < set(first.tolist())


def test_replicated_seeds_run_only_what_replicates_names(config):
    from atop.config import full_seeds, seed_plan

    config["seeds"] = [3, 1, 2]
    config["replicates"] = {"defenses": ["ap", "atop"], "attacks": ["eot_pgd"]}
    check_config(config)
    assert seed_plan(config, 3) == (config["evaluation"]["defenses"], list(config["evaluation"]["attacks"]))
    assert seed_plan(config, 1) == (["ap", "atop"], ["eot_pgd"]) and full_seeds(config) == [3]
    config["replicates"] = None
    assert seed_plan(config, 2)[1] == list(config["evaluation"]["attacks"]) and full_seeds(config) == [3, 1, 2]


def test_params_check_records_the_selection_and_names_each_mistake(tmp_path):
    """`python -m atop.config --params params.yaml --record F`, DVC's first stage: a valid selection is
    written to F; a missing config file or a stray key is named, and F is not written."""
    repo = Path(__file__).resolve().parents[1]
    (tmp_path / "config").mkdir()
    (tmp_path / "config/tiny.yaml").write_text((repo / "config/tiny.yaml").read_text())
    params, record = tmp_path / "params.yaml", tmp_path / "results/tiny/dvc_selection.json"

    def check(selection: dict) -> subprocess.CompletedProcess:
        params.write_text(yaml.safe_dump(selection))
        command = [sys.executable, "-m", "atop.config", "--params", str(params), "--record", str(record)]
        return subprocess.run(command, check=False, capture_output=True, text=True, cwd=tmp_path)

    done = check({"configfile": "config/tiny.yaml", "experiment": "tiny"})
    assert done.returncode == 0, done.stderr
    assert yaml.safe_load(record.read_text()) == {"configfile": "config/tiny.yaml", "experiment": "tiny"}
    record.unlink()
    for selection, message in [
        ({"configfile": "config/mine.yaml", "experiment": "mine"}, "configfile config/mine.yaml does not exist"),
        ({"configfile": "config/tiny.yaml", "experiment": "tiny", "evaluation": {}}, "unknown key 'evaluation'"),
        ({"configfile": "config/tiny.yaml", "experiment": "digits"}, "declares experiment 'tiny'"),
    ]:
        done = check(selection)
        assert done.returncode == 1 and message in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert not record.exists()
