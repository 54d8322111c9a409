"""Bring your own defense: config checks, the factory, the defense check and user-defined claims."""

from __future__ import annotations

import copy
import hashlib
import textwrap
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from atop.config import ConfigError, check_config
from atop.custom_defenses import check_custom_defenses, entry, parse_factory
from atop.defense import CustomDefense, CustomDefenseError, build_custom_defense, build_defense
from atop.defense_check import DefenseCheckError, check_defense
from atop.defense_kinds import split_defense
from atop.io import CheckpointError

from report_fixtures import make_result, write_results

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "config" / "examples" / "custom-defense.yaml"


def example_config() -> dict:
    return yaml.safe_load(EXAMPLE.read_text())


# ----------------------------------------------------------------------------- config checks (torch-free)


def test_example_config_passes_its_checks(monkeypatch):
    monkeypatch.chdir(REPO)
    config = example_config()
    check_config(config)
    assert split_defense("custom-noisy-median") == ("custom", "noisy-median")
    assert entry(config, "custom-noisy-median")["factory"] == "examples/noisy_median.py:build"
    assert entry({"custom_defenses": {"only": {"factory": "a.py:f"}}}, "custom")["name"] == "only"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda c: c["custom_defenses"]["noisy-median"].update(factory="examples/noisy_median.py"),
            r"is not 'file\.py:function'",
        ),
        (
            lambda c: c["custom_defenses"]["noisy-median"].update(factory="examples/nope.py:build"),
            r"custom_defenses\.noisy-median\.factory: 'examples/nope\.py' is not found",
        ),
        (
            lambda c: c["custom_defenses"]["noisy-median"].update(factory="examples/noisy_median.py:make"),
            r"defines no 'make' at its top level \(it defines: .*build",
        ),
        (
            lambda c: c["custom_defenses"]["noisy-median"].update(factory="no_such_package.mod:build"),
            r"'no_such_package\.mod' is not found \(on the Python path\)",
        ),
        (
            lambda c: c["evaluation"]["defenses"].append("custom-other"),
            r"'custom-other' names entry 'other', not in custom_defenses \(noisy-median\)",
        ),
        (
            lambda c: c["evaluation"]["defenses"].append("custom"),
            r"'custom' is the same defense as 'custom-noisy-median'",
        ),
        (
            lambda c: c["verdicts"]["claims"][0].update(a="custom-x"),
            r"verdicts\.claims\[0\]\.a = 'custom-x' is not in evaluation\.defenses",
        ),
        (
            lambda c: c["verdicts"]["claims"][0].update(b="custom-noisy-median"),
            r"verdicts\.claims\[0\] compares 'custom-noisy-median' with itself",
        ),
        (
            lambda c: c["verdicts"]["claims"][1].update(key="median_beats_ap"),
            r"verdicts\.claims\[1\]\.key = 'median_beats_ap' is taken",
        ),
        (lambda c: c["verdicts"]["claims"][1].update(key="ft_improves_over_ap"), r"'ft_improves_over_ap' is taken"),
    ],
)
def test_config_mistakes_are_named(monkeypatch, change, message):
    monkeypatch.chdir(REPO)
    config = example_config()
    change(config)
    with pytest.raises(ConfigError, match=message):
        check_config(config)


def test_bare_custom_needs_exactly_one_entry(monkeypatch):
    monkeypatch.chdir(REPO)
    config = example_config()
    config["custom_defenses"]["second"] = dict(config["custom_defenses"]["noisy-median"])
    config["evaluation"]["defenses"] = ["standard", "at", "ap", "atop", "custom"]
    config["verdicts"]["claims"] = []
    with pytest.raises(ConfigError, match=r"'custom' names no entry.*exactly one in custom_defenses.*custom-<name>"):
        check_config(config)


def test_weights_checksum_is_checked_before_any_job(tmp_path):
    weights = tmp_path / "w.pt"
    torch.save({"scale": torch.ones(1)}, weights)
    (tmp_path / "f.py").write_text("def build(classifier, weights):\n    pass\n")
    good = hashlib.sha256(weights.read_bytes()).hexdigest()
    config = {"custom_defenses": {"d": {"factory": "f.py:build", "weights": {"path": "w.pt", "sha256": good}}}}
    check_custom_defenses(config, tmp_path)
    config["custom_defenses"]["d"]["weights"]["sha256"] = "0" * 64
    with pytest.raises(
        ConfigError, match=r"custom_defenses\.d\.weights\.sha256: .*w\.pt has sha256 [0-9a-f]{64}, not 0{64}"
    ):
        check_custom_defenses(config, tmp_path)
    config["custom_defenses"]["d"]["weights"]["path"] = "missing.pt"
    with pytest.raises(ConfigError, match=r"custom_defenses\.d\.weights\.path: .*missing\.pt does not exist"):
        check_custom_defenses(config, tmp_path)


def test_factory_syntax_error_names_the_line(tmp_path):
    (tmp_path / "f.py").write_text("def build(:\n")
    with pytest.raises(ConfigError, match=r"f\.py does not parse: line 1"):
        check_custom_defenses({"custom_defenses": {"d": {"factory": "f.py:build"}}}, tmp_path)


def test_parse_factory_forms():
    assert parse_factory("examples/x.py:build", "k").is_file
    module = parse_factory("pkg.mod:make_defense", "k")
    assert not module.is_file and module.function == "make_defense"
    with pytest.raises(ConfigError, match="^k: "):
        parse_factory("pkg.mod:1bad", "k")


# ----------------------------------------------------------------------------- the factory and the wrapper


class Linear(nn.Module):
    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.fc = nn.Linear(3 * 4 * 4, classes)

    def forward(self, x):
        return self.fc(x.flatten(1))


def write_factory(folder: Path, body: str) -> str:
    (folder / "mine.py").write_text("import torch\nfrom torch import nn\n\n" + textwrap.dedent(body))
    return "mine.py:build"


def test_example_defense_is_randomized_repeatable_and_keeps_the_attack_rng_apart(monkeypatch):
    monkeypatch.chdir(REPO)
    spec = entry(example_config(), "custom-noisy-median")
    defense = build_custom_defense(spec, Linear(10).eval(), seed=0)
    x = torch.rand(5, 3, 4, 4)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    first = defense(x)
    assert torch.equal(torch.get_rng_state(), before)  # the defense's draws leave the attack's RNG alone
    defense.reseed(0)
    assert torch.equal(defense(x), first)  # repeatable from its seed
    assert not torch.equal(defense(x), first)  # and a new draw differs
    assert first.shape == (5, 10) and defense.randomized


def test_weights_reach_the_factory_and_a_bad_checksum_is_refused(tmp_path):
    weights = tmp_path / "w.pt"
    torch.save({"scale": torch.tensor([2.0])}, weights)
    factory = write_factory(
        tmp_path,
        """
        class Scaled(nn.Module):
            def __init__(self, scale):
                super().__init__()
                self.scale = scale

            def forward(self, x):
                return self.scale * x.flatten(1)[:, :3]

        def build(classifier, weights, offset=0.0):
            assert classifier is None
            return Scaled(weights["scale"] + offset)
        """,
    )
    sha = hashlib.sha256(weights.read_bytes()).hexdigest()
    spec = {"name": "d", "factory": factory, "randomized": False, "params": {"offset": 1.0}}
    spec["weights"] = {"path": "w.pt", "sha256": sha}
    defense = build_custom_defense(spec, None, seed=0, root=tmp_path)
    x = torch.rand(2, 3, 4, 4)
    assert torch.allclose(defense(x), 3.0 * x.flatten(1)[:, :3])
    spec["weights"]["sha256"] = "f" * 64
    with pytest.raises(CheckpointError, match="has sha256"):
        build_custom_defense(spec, None, seed=0, root=tmp_path)


def test_a_factory_returning_no_module_is_named(tmp_path):
    factory = write_factory(tmp_path, "def build(classifier, weights):\n    return lambda x: x\n")
    with pytest.raises(
        CustomDefenseError, match=r"custom_defenses\.d: mine\.py:build returned a function, not an nn\.Module"
    ):
        build_custom_defense({"name": "d", "factory": factory, "randomized": False}, None, 0, root=tmp_path)


def test_build_defense_needs_the_entry_and_the_declared_classifier():
    with pytest.raises(ValueError, match="its config entry is needed"):
        build_defense("custom-x", None, None, seed=0)
    spec = {"name": "x", "factory": "examples/noisy_median.py:build", "randomized": True, "classifier": "standard"}
    with pytest.raises(ValueError, match="classifier is standard, but no classifier checkpoint was given"):
        build_defense("custom-x", None, None, seed=0, custom=spec)


# ----------------------------------------------------------------------------- the defense check


class Noisy(nn.Module):
    """Robust only through randomness when ``std`` is large: the logits are noise."""

    def __init__(self, std: float = 1.0) -> None:
        super().__init__()
        self.inner, self.std = Linear(), std

    def forward(self, x):
        return self.inner(x) + self.std * torch.randn(len(x), 3)


def _images(n: int = 8):
    generator = torch.Generator().manual_seed(0)
    return torch.rand(n, 3, 4, 4, generator=generator), torch.randint(0, 3, (n,), generator=generator)


def test_a_sound_randomized_defense_passes_with_its_record():
    x, y = _images()
    torch.manual_seed(0)  # the linear layer's initial weights: not whatever tests ran before on this worker
    record = check_defense(CustomDefense(Noisy(), randomized=True), x, y, 3, seed=0)
    assert record["draws_differ"] and record["repeatable"] and record["logits_shape"] == [8, 3]
    assert record["gradient_nonzero_fraction"] == 1.0
    at_chance = record["clean_accuracy"] <= 1 / 3  # the only warning a sound defense may get
    chance = f"clean accuracy {record['clean_accuracy']:.2f} on the check images is at chance level"
    assert record["warnings"] == ([chance] if at_chance else [])


def test_declared_deterministic_but_random_is_refused():
    x, y = _images()
    with pytest.raises(DefenseCheckError, match=r"declared deterministic \(randomized: false\) but two passes"):
        check_defense(CustomDefense(Noisy(), randomized=False), x, y, 3, seed=0)


def test_declared_randomized_but_constant_is_a_warning():
    x, y = _images()
    record = check_defense(CustomDefense(Linear(), randomized=True), x, y, 3, seed=0)
    assert any("every draw gave the same logits" in w for w in record["warnings"])


class WrongShape(nn.Module):
    def forward(self, x):
        return x.flatten(1)


class NoGradient(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = Linear()

    def forward(self, x):
        return nn.functional.one_hot(self.inner(x).argmax(1), 3).float()


class InPlace(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = Linear()

    def forward(self, x):
        if not x.requires_grad:
            x.mul_(0.5)
        return self.inner(x)


@pytest.mark.parametrize(
    ("module", "message"),
    [
        (WrongShape(), r"returned shape \(8, 48\) for 8 images; logits of shape \(8, 3\) are needed"),
        (NoGradient(), "no gradient with respect to the input"),
        (InPlace(), "changed its input in place"),
    ],
)
def test_broken_contracts_are_refused(module, message):
    x, y = _images()
    with pytest.raises(DefenseCheckError, match=message):
        check_defense(CustomDefense(module, randomized=False), x, y, 3, seed=0)


# ----------------------------------------------------------------------------- user-defined claims


def test_a_user_claim_is_judged_beside_the_papers(tmp_path):
    from atop.report import write_report

    results = []
    for defense, robust in (("standard", 0.05), ("ap", 0.40), ("atop", 0.55), ("custom-mine", 0.30)):
        results += [make_result(defense, "eot_pgd", robust, n=256), make_result(defense, "fgsm", robust + 0.1, n=256)]
    write_results(tmp_path, results)
    claims = [
        {"key": "mine_beats_ap", "statement": "Mine beats AP.", "a": "custom-mine", "b": "ap"},
        {
            "key": "atop_beats_mine",
            "statement": "AToP beats mine.",
            "a": "atop",
            "b": "custom-mine",
            "metric": "robust",
        },
    ]
    metrics = write_report(
        [tmp_path / "eval"],
        tmp_path / "report",
        "digits",
        "digits",
        purifier="gan_unet",
        transform="rt2",
        verdicts={"claims": copy.deepcopy(claims)},
    )
    judged = metrics["claims"]
    assert judged["atop_beats_mine"]["these_models"] == "supported"
    assert judged["mine_beats_ap"]["these_models"] == "contradicted"
    assert judged["ft_improves_over_ap"]["these_models"] == "supported"  # the paper's claims unchanged
    summary = (tmp_path / "report" / "summary.md").read_text()
    assert "AToP beats mine." in summary and "Mine beats AP." in summary


# ----------------------------------------------------------------------------- the worked example, end to end


def test_worked_example_runs_end_to_end(workflow_dir):
    """config/examples/custom-defense.yaml: checked, evaluated, diagnosed, scored every way, judged."""
    import json

    from conftest import run_snakemake

    run = run_snakemake(workflow_dir, "--cores", "2", "all", "--configfile", "config/examples/custom-defense.yaml")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    results = workflow_dir / "results" / "custom-example"
    check = json.loads((results / "defense_checks" / "seed0" / "custom-noisy-median.json").read_text())
    assert check["declared_randomized"] and check["draws_differ"] and check["repeatable"]
    assert len(check["provenance"]["inputs_sha256"]["factory"]) == 64  # the factory file's hash is recorded
    evaluation = json.loads((results / "eval" / "seed0" / "custom-noisy-median" / "eot_pgd.json").read_text())
    assert evaluation["randomized"] and evaluation["draws"] == 2 and evaluation["eot"] == 2
    assert len(evaluation["fooled_while_optimizing"]) == evaluation["n"]
    assert evaluation["robust"]["accuracy"] <= evaluation["clean"]["accuracy"]
    metrics = json.loads((results / "report" / "metrics.json").read_text())
    assert "custom-noisy-median" in metrics["defenses"]
    assert {"median_beats_ap", "atop_beats_median"} <= set(metrics["claims"])
    protocols = (results / "report" / "tables" / "protocols.csv").read_text()
    assert "custom-noisy-median" in protocols and "atop" in protocols
    assert (results / "diagnostics" / "seed0" / "gradient_concentration" / "custom-noisy-median.json").is_file()
    summary = (results / "report" / "summary.md").read_text()
    assert "## Scoring protocols" in summary and "Noise + median filtering" in summary


# ----------------------------------------------------------------------------- protocols config, CLI flag


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p: p.update(attack="nope"), r"evaluation\.protocols\.attack = 'nope' is not in evaluation\.attacks"),
        (lambda p: p.update(attack="fgsm", jobs=["deterministic"]), None),  # fgsm records its queries
        (lambda p: p.update(attack="fgsm"), r"jobs runs selective_eot, which attack 'fgsm' \(fgsm\) does not offer"),
        (lambda p: p.update(defenses=["custom-x"]), r"evaluation\.protocols\.defenses \['custom-x'\] are neither"),
    ],
)
def test_protocols_config_mistakes_are_named(monkeypatch, change, message):
    monkeypatch.chdir(REPO)
    config = example_config()
    change(config["evaluation"]["protocols"])
    if message is None:
        check_config(config)
        return
    with pytest.raises(ConfigError, match=message):
        check_config(config)


def test_protocols_attack_must_record_its_queries(monkeypatch):
    monkeypatch.chdir(REPO)
    config = example_config()
    config["evaluation"]["attacks"]["square"] = {"method": "square", "eps": "8/255", "n_queries": 10}
    config["evaluation"]["protocols"].update(attack="square", jobs=["deterministic"])
    with pytest.raises(ConfigError, match=r"'square' \(square\) keeps no record of its queries"):
        check_config(config)


@pytest.mark.parametrize("text", ["{not json", '["a"]', '{"name": "x"}'])
def test_a_bad_custom_defense_flag_is_named(text):
    import argparse

    from atop.commands._common import parse_custom

    with pytest.raises(argparse.ArgumentTypeError, match="--custom-defense"):
        parse_custom(text)
