"""Diagnostics (src/atop/diagnostics/): cases with known answers, bad settings, the checks and the CLI."""

from __future__ import annotations

import copy
import itertools
import json
import math
import re
from pathlib import Path

import jsonschema
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from atop.attacks import ATTACKS, build_attack
from atop.config import ConfigError
from atop.defense import DefendedModel
from atop.defense_kinds import DEFENSES as DEFENSE_KINDS
from atop.defense_kinds import split_defense
from atop.diagnostics import catalog
from atop.diagnostics.concentration import (
    disjoint_cosine,
    gradient_concentration,
    mean_resultant_length,
    sufficiency_grid,
)
from atop.diagnostics.measures import (
    input_gradient_norm,
    kl_divergence,
    output_margin,
    perturbed_weights,
    robustness_measures,
    weight_flatness,
)
from atop.diagnostics.pictures import PANELS, defense_pictures, pictures_figure
from atop.diagnostics.settings import PARTIAL_GRADIENT_METHODS, check_diagnostics
from atop.diagnostics.summary import eot_sufficiency_checks, write_summary
from atop.models import build_classifier, build_purifier
from atop.transforms import build_transform

ROOT = Path(__file__).resolve().parents[1]


def _linear(seed: int = 0, size: int = 8, classes: int = 3) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * size * size, classes)).eval()


class RandomDirection(nn.Module):
    """A 'randomized model' whose loss gradient points in a fresh random direction on every draw."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        direction = torch.randn_like(x)
        score = (x * direction).flatten(1).sum(dim=1)
        return torch.stack([score, torch.zeros_like(score)], dim=1)


def _images(n: int, size: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------- gradient concentration


def test_deterministic_model_has_resultant_length_one_and_needs_one_draw():
    model = _linear()
    x, y = _images(6), torch.tensor([0, 1, 2, 0, 1, 2])
    result = gradient_concentration(model, x, y, draws=4, reference_draws=8, cosine=0.99, chunk=3, batch_size=4)
    assert result["mean_resultant_length"] == pytest.approx(1.0, abs=1e-5)
    assert result["mean_pairwise_cosine"] == pytest.approx(1.0, abs=1e-4)
    assert result["sufficiency"]["k"] == [1, 2, 4]
    assert result["sufficiency"]["cosine"] == pytest.approx([1.0] * 3, abs=1e-5)
    assert result["eot_needed"] == 1
    assert len(result["mean_resultant_length_per_image"]) == 6


def test_random_gradient_directions_have_resultant_length_one_over_sqrt_n():
    torch.manual_seed(0)
    n = 64
    x, y = _images(48, size=16), torch.zeros(48, dtype=torch.long)
    result = gradient_concentration(RandomDirection(), x, y, draws=n, reference_draws=n, cosine=0.9, chunk=16)
    r = torch.tensor(result["mean_resultant_length_per_image"])
    # independent unit vectors: E[R^2] = 1/n exactly; R is near 0, nowhere near a deterministic model's 1
    assert r.pow(2).mean().item() == pytest.approx(1 / n, rel=0.25)
    assert result["mean_resultant_length"] < 0.2
    assert abs(result["mean_pairwise_cosine"]) < 0.02
    assert result["eot_needed"] is None and result["eot_needed_above"] == 32, "more than K / 2: all a pool can show"
    assert max(result["sufficiency"]["cosine"]) < 0.9


def test_sufficiency_grid_doubles_up_to_half_the_pool():
    assert sufficiency_grid(64) == [1, 2, 4, 8, 16, 32]
    assert sufficiency_grid(48) == [1, 2, 4, 8, 16]
    assert sufficiency_grid(2) == [1]


def test_zero_gradients_of_a_deterministic_model_keep_resultant_length_one():
    """Half the images at exactly zero gradient (issue 23, finding 4): R = 1 for every image, no cosine for them."""
    gradients = torch.randn(1, 4, 10).expand(8, 4, 10).clone()
    gradients[:, 2:] = 0
    assert mean_resultant_length(gradients).tolist() == pytest.approx([1.0] * 4)
    curve = disjoint_cosine(gradients, [1, 2, 4])
    assert torch.allclose(curve[:, :2], torch.ones(3, 2, dtype=torch.float64)) and curve[:, 2:].isnan().all()


def test_concentration_refuses_fewer_than_two_draws():
    with pytest.raises(ValueError, match="draws = 1"):
        mean_resultant_length(torch.randn(1, 3, 10))
    with pytest.raises(ValueError, match="draws = 1"):
        gradient_concentration(_linear(), _images(2), torch.tensor([0, 1]), draws=1, reference_draws=4)
    with pytest.raises(ValueError, match="reference_draws = 4"):
        gradient_concentration(_linear(), _images(2), torch.tensor([0, 1]), draws=8, reference_draws=4)


# --------------------------------------------------------------------------- margin, KL, gradient norm


def test_output_margin_known_values_and_sign():
    logits = torch.tensor([[2.0, 1.0, 0.0], [2.0, 1.0, 0.0], [0.5, 0.5, 3.0]])
    assert output_margin(logits, torch.tensor([0, 2, 2])).tolist() == [1.0, -2.0, 2.5]
    random = torch.randn(200, 5, generator=torch.Generator().manual_seed(1))
    labels = torch.randint(0, 5, (200,), generator=torch.Generator().manual_seed(2))
    margin = output_margin(random, labels)
    assert torch.equal(margin > 0, random.argmax(dim=1) == labels)


def test_kl_is_zero_for_equal_predictions_and_matches_a_known_value():
    logits = torch.randn(10, 4)
    assert kl_divergence(logits, logits).abs().max().item() < 1e-6
    assert kl_divergence(logits, logits + 3.0).abs().max().item() < 1e-5, "softmax ignores a shift"
    p, q = torch.tensor([[0.75, 0.25]]), torch.tensor([[0.5, 0.5]])
    expected = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert kl_divergence(p.log(), q.log()).item() == pytest.approx(expected, abs=1e-6)
    assert (kl_divergence(torch.randn(50, 4), torch.randn(50, 4)) > 0).all()


def test_input_gradient_norm_of_a_linear_model_matches_the_closed_form():
    model = _linear()
    x, y = _images(4), torch.tensor([0, 1, 2, 1])
    weight = model[1].weight
    p = F.softmax(model(x), dim=1)
    expected = ((p - F.one_hot(y, 3).float()) @ weight).norm(dim=1)
    assert input_gradient_norm(model, x, y) == pytest.approx(expected.tolist(), rel=1e-4)


# --------------------------------------------------------------------------- flatness


class SmallNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(48, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 2))

    def forward(self, x):
        return self.body(x)


def _brightness(n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = ((0.3 + 0.4 * y.float()).view(n, 1, 1, 1) + 0.05 * torch.randn(n, 3, 4, 4, generator=g)).clamp(0, 1)
    return x, y


def _random_labels(n: int = 64, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 4, 4, generator=g), torch.randint(0, 2, (n,), generator=g)


def _memorised(net: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int = 200) -> nn.Module:
    optimizer = torch.optim.Adam(net.parameters(), lr=2e-2)
    net.train()
    for _ in range(steps):
        optimizer.zero_grad()
        F.cross_entropy(net(x), y).backward()
        optimizer.step()
    return net.eval()


def test_flatness_is_zero_at_zero_radius_and_restores_the_weights():
    torch.manual_seed(0)
    net = SmallNet().eval()
    before = copy.deepcopy(net.state_dict())
    attack = build_attack("fgsm", net, {"eps": 0.05})
    x, y = _brightness(16, 1)
    result = weight_flatness(net, net, attack, x, y, xi=0.0, perturbations=2)
    assert result["flatness"] == pytest.approx(0.0, abs=1e-7)
    result = weight_flatness(net, net, attack, x, y, xi=0.5, perturbations=2)
    assert result["perturbed_tensors"] == 4, "two Linear layers (weight, bias); BatchNorm is left alone"
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_perturbation_has_the_relative_size_and_skips_normalisation():
    net = SmallNet()
    weights = {name: p.detach().clone() for name, p in net.named_parameters()}
    with perturbed_weights(net, 0.5, torch.Generator().manual_seed(0)):
        for name, p in net.named_parameters():
            if ".2." in name:  # the BatchNorm layer
                assert torch.equal(p, weights[name])
            else:
                change = (p - weights[name]).norm() / weights[name].norm()
                assert change.item() == pytest.approx(0.5, rel=1e-4)
    with pytest.raises(ValueError, match="xi = -0.1"), perturbed_weights(net, -0.1, torch.Generator()):
        pass


def test_a_trained_model_sits_in_a_sharper_robust_minimum_than_an_untrained_one():
    """A network that memorised random labels sits in a sharp minimum of its (robust) training loss: relative
    weight noise of 0.5 raises the loss a lot. An untrained one's loss is near log 2 and noise barely moves it."""
    torch.manual_seed(0)
    x, y = _random_labels()
    untrained, trained = SmallNet().eval(), _memorised(SmallNet(), x, y)
    measured = {}
    for name, net in (("untrained", untrained), ("trained", trained)):
        attack = build_attack("fgsm", net, {"eps": 0.02})
        measured[name] = weight_flatness(net, net, attack, x, y, xi=0.5, perturbations=10, seed=1)
    assert measured["trained"]["robust_loss_before"] < 0.1
    assert measured["untrained"]["robust_loss_before"] == pytest.approx(math.log(2), abs=0.2)
    assert measured["trained"]["flatness"] > 0.1
    assert measured["trained"]["flatness"] > 10 * abs(measured["untrained"]["flatness"])


def test_flatness_refuses_a_negative_radius():
    net = SmallNet().eval()
    with pytest.raises(ValueError, match="xi = -1"):
        weight_flatness(net, net, build_attack("fgsm", net, {"eps": 0.1}), *_brightness(4, 0), xi=-1)


# --------------------------------------------------------------------------- a randomized defense end to end


def _defense(size: int = 16) -> DefendedModel:
    torch.manual_seed(0)
    classifier = build_classifier("small_cnn", 3, [0.5] * 3, [0.25] * 3, image_size=size, width=4).eval()
    generator = build_purifier("gan_unet", base_channels=4).generator.eval()
    transform = build_transform("rt2", seed=0, noise_std=0.25, grid=4, mask_rate=0.25)
    return DefendedModel(classifier.requires_grad_(False), generator.requires_grad_(False), transform).eval()


def test_measures_of_a_randomized_defense_at_zero_budget_are_the_zero_cases():
    defense = _defense()
    x, y = _images(6, size=16), torch.tensor([0, 1, 2, 0, 1, 2])
    attack = build_attack("eot_pgd", defense, {"eps": 0.0, "alpha": 0.01, "steps": 1, "eot": 2})
    result = robustness_measures(defense, attack, (x, y), (x, y), draws=2, seed=0, flatness_draws=1, networks={})
    for split in ("train", "test"):
        # common random numbers: clean and 'adversarial' (unchanged) images see the same draws
        assert result[split]["kl"] == pytest.approx(0.0, abs=1e-6)
        assert result[split]["robust_accuracy"] == result[split]["clean_accuracy"]
    assert result["robust_generalization_gap"] == pytest.approx(0.0)


def test_measures_of_a_randomized_defense_under_attack():
    defense = _defense()
    x, y = _images(6, size=16), torch.tensor([0, 1, 2, 0, 1, 2])
    attack = build_attack("eot_pgd", defense, {"eps": 0.3, "alpha": 0.1, "steps": 2, "eot": 2})
    networks = {"classifier": defense.classifier, "purifier": defense.purifier}
    result = robustness_measures(
        defense, attack, (x[:3], y[:3]), (x[3:], y[3:]), draws=2, seed=0, flatness_draws=2, networks=networks
    )
    assert result["robust_generalization_gap"] == pytest.approx(
        result["train"]["robust_accuracy"] - result["test"]["robust_accuracy"]
    )
    low, high = result["robust_generalization_gap_interval"]
    assert low <= result["robust_generalization_gap"] <= high and low <= 0 <= high, "3 images a split tell nothing"
    for split in ("train", "test"):
        assert 0 <= result[split]["robust_accuracy"] <= 1 and result[split]["kl"] > 0
        assert result[split]["input_gradient_norm"] > 0
    assert set(result["flatness"]) == {"classifier", "purifier"}
    assert all(len(f["robust_loss_after"]) == 2 for f in result["flatness"].values())


def test_pictures_of_a_randomized_and_a_deterministic_defense(tmp_path):
    defense = _defense()
    x, y = _images(2, size=16), torch.tensor([0, 1])
    attack = build_attack("eot_pgd", defense, {"eps": 0.1, "alpha": 0.05, "steps": 1, "eot": 1})
    randomized = defense_pictures(defense, attack, x, y, seed=0)
    assert (randomized["images"]["adversarial"] - x).abs().max() <= 0.1 + 1e-6
    assert not torch.equal(randomized["images"]["after RT"], x), "RT changes the image"
    standard = DefendedModel(defense.classifier).eval()
    plain = defense_pictures(standard, build_attack("fgsm", standard, {"eps": 0.1}), x, y, seed=0)
    assert plain["images"]["purified"] is None and plain["images"]["after RT"] is None
    path = pictures_figure({"atop": randomized, "standard": plain}, tmp_path / "pictures.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(PANELS) == 5


# --------------------------------------------------------------------------- EOT-sufficiency checks


def _concentration(defense: str, needed, reference: int = 64) -> dict:
    return {
        "defense": defense,
        "randomized": True,
        "eot_needed": needed,
        "eot_needed_above": None if needed else reference // 2,
        "cosine_threshold": 0.9,
        "reference_draws": reference,
        "mean_resultant_length": 0.3,
        "sufficiency": {"k": [1, 2, 4], "cosine": [0.3, 0.5, 0.7]},
    }


def _result(
    defense: str, attack: str, eot: int | None, randomized: bool = True, gradient: str = "full", fractions=None
) -> dict:
    params = {"eps": 0.1} | ({"eot": eot} if eot is not None else {})
    result = {"defense": defense, "attack": attack, "randomized": randomized, "gradient": gradient, "params": params}
    if fractions is not None:
        result |= {"sample_indices": list(range(len(fractions))), "per_sample": {"robust_correct_fraction": fractions}}
    return result


def _sweep_point(defense: str, eot: int, fractions) -> dict:
    point = _result(defense, f"eot_pgd@eot={eot}", eot, fractions=fractions)
    return point | {"sweep": {"name": "eot", "param": "eot", "value": eot, "base_attack": "eot_pgd"}}


def test_eot_check_decides_on_accuracy_not_on_the_cosine():
    """EOT 16 scores lower than EOT 4 on the same images: too small, whatever the cosine says; flat: enough."""
    n = 64
    flat = [1.0] * 40 + [0.5] * 8 + [0.0] * 16
    dropping = [0.0] * 30 + [1.0] * 10 + [0.0] * 24  # EOT 16 breaks 30 of the images EOT 4 kept
    results = [
        _result("atop", "eot_pgd", 4, fractions=flat),
        _sweep_point("atop", 1, [1.0] * n),
        _sweep_point("atop", 4, flat),
        _sweep_point("atop", 16, [1.0] * 40 + [0.25, 0.75] * 4 + [0.0] * 16),  # draw noise both ways
        _result("ap", "eot_pgd", 4, fractions=flat),
        _sweep_point("ap", 4, flat),
        _sweep_point("ap", 16, [min(a, b) for a, b in zip(flat, dropping, strict=True)]),
        _result("other", "eot_pgd", 4, fractions=flat),  # no sweep above 4: not tested
        _result("atop", "pgd", None),  # no EOT: not judged
        _result("atop", "bpda", 4, gradient="bpda_identity"),  # not the full gradient: not judged
        _result("standard", "eot_pgd", 4, randomized=False),
    ]
    # atop's cosine curve never reaches 0.9: the old rule failed it; the accuracy does not drop
    concentration = [_concentration("atop", None), _concentration("ap", 2)]
    records = {r["defense"]: r for r in eot_sufficiency_checks(concentration, results)}
    assert set(records) == {"atop", "ap", "other"}
    assert records["atop"]["passed"] is True and "enough" in records["atop"]["detail"]
    assert "0.9 not reached by k = 32" in records["atop"]["detail"], "the cosine explains"
    assert records["ap"]["passed"] is False and "EOT TOO SMALL" in records["ap"]["detail"]
    assert records["ap"]["accuracy"][1] < records["ap"]["accuracy"][0] and records["ap"]["p_value"] < 0.05
    assert records["other"]["passed"] is None and "not tested" in records["other"]["detail"]
    assert all({"defense", "claim", "passed", "detail"} <= set(r) for r in records.values())


def test_summary_writes_table_figures_and_checks(tmp_path):
    measure = {
        "defense": "atop",
        "randomized": True,
        "attack": "eot_pgd",
        "draws": 2,
        "robust_generalization_gap": 0.1,
        "robust_generalization_gap_interval": [-0.37, 0.52],
        "train": {"robust_accuracy": 0.6, "margin": 0.5, "input_gradient_norm": 1.0, "kl": 0.2, "n": 8},
        "test": {"robust_accuracy": 0.5, "margin": 0.4, "input_gradient_norm": 1.1, "kl": 0.3, "n": 8},
        "flatness": {"classifier": {"flatness": 0.3}, "purifier": {"flatness": 0.1}},
    }
    standard = copy.deepcopy(measure) | {"defense": "standard", "randomized": False, "flatness": {}}
    distortion = [{"defense": "atop", "distortion": 0.25}]
    per_defense = {
        "robustness_measures": [measure, standard],
        "gradient_concentration": [_concentration("atop", 8)],
        "boundary_distortion": distortion,
    }
    counts = write_summary(per_defense, [_result("atop", "eot_pgd", 4)], tmp_path)
    assert counts == {"defenses": 2, "checks": 1, "failed": 0}, "no sweep: not tested, not failed"
    table = (tmp_path / "measures.csv").read_text().splitlines()
    # the columns are the catalog's, in its order
    catalog_columns = [column.name for diagnostic in catalog.PER_DEFENSE for column in diagnostic.columns]
    assert table[0].split(",") == ["defense", *catalog_columns] and len(table) == 3
    assert catalog_columns[:3] == ["randomized", "attack", "draws"] and "flatness_purifier" in catalog_columns
    frame = pd.read_csv(tmp_path / "measures.csv").set_index("defense")
    assert frame.loc["atop", "boundary_distortion"] == 0.25 and pd.isna(frame.loc["standard", "boundary_distortion"])
    assert "| standard |" in (tmp_path / "measures.md").read_text()
    assert (
        "- atop: robust generalization gap +10.0 pp, 95 % interval [-37.0, +52.0]: cannot be told from no gap on 8 images per split."
        in (tmp_path / "measures.md").read_text()
    )
    for figure in ("measures_vs_robust_accuracy", "eot_sufficiency"):
        assert (tmp_path / f"{figure}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((tmp_path / "eot_checks.json").read_text())["passed"] is False, "untested is not passed"


def test_summary_reads_each_diagnostic_from_its_folder(tmp_path):
    """The summary job's inputs are known by their catalog folder; a file from elsewhere is named."""
    from atop.diagnostics.summary import group_by_diagnostic

    files = []
    for folder, defense in (("measures", "ap"), ("gradient_concentration", "ap"), ("distortion", "atop")):
        path = tmp_path / "seed0" / folder / f"{defense}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"defense": defense, "folder": folder}))
        files.append(path)
    grouped = group_by_diagnostic(files)
    assert {name: [r["folder"] for r in records] for name, records in grouped.items()} == {
        "robustness_measures": ["measures"],
        "gradient_concentration": ["gradient_concentration"],
        "boundary_distortion": ["distortion"],
    }
    stray = tmp_path / "seed0" / "other" / "ap.json"
    stray.parent.mkdir()
    stray.write_text("{}")
    with pytest.raises(ValueError, match="other/ap.json: not in a per-defense diagnostic's folder"):
        group_by_diagnostic([stray])


# --------------------------------------------------------------------------- settings


@pytest.fixture
def config() -> dict:
    from snakemake.utils import validate

    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    validate(cfg, str(ROOT / "config" / "schema.yaml"), set_default=True)
    return cfg


def test_shipped_config_gets_the_diagnostics_defaults(config):
    assert config["diagnostics"]["attack"] == "eot_pgd"
    assert config["diagnostics"]["gradient_concentration"]["draws"] >= 16
    assert config["diagnostics"]["measures"]["flatness_xi"] == 0.5
    check_diagnostics(config)


@pytest.mark.parametrize(
    ("change", "key"),
    [
        (lambda d: d["gradient_concentration"].update(draws=1), "diagnostics.gradient_concentration.draws"),
        (
            lambda d: d["gradient_concentration"].update(reference_draws=8),
            "diagnostics.gradient_concentration.reference_draws",
        ),
        (lambda d: d["gradient_concentration"].update(cosine=0), "diagnostics.gradient_concentration.cosine"),
        (lambda d: d["measures"].update(flatness_xi=-0.5), "diagnostics.measures.flatness_xi"),
        (lambda d: d["measures"].update(flatness_draws=0), "diagnostics.measures.flatness_draws"),
        (lambda d: d.update(attack="nope"), "diagnostics.attack"),
        (lambda d: d.update(attack="bpda_eot"), "diagnostics.attack"),
        (lambda d: d["pictures"].update(images=[0, 500]), "diagnostics.pictures.images"),
    ],
)
def test_bad_diagnostics_settings_are_refused_naming_the_key(config, change, key):
    change(config["diagnostics"])
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        check_diagnostics(config)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("gradient_concentration", "draws"), 1),
        (("measures", "flatness_xi"), -0.5),
        (("pictures", "images"), []),
    ],
)
def test_schema_refuses_bad_diagnostics_settings(path, value):
    schema = yaml.safe_load((ROOT / "config" / "schema.yaml").read_text())
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    cfg["diagnostics"] = {path[0]: {path[1]: value}}
    errors = list(jsonschema.Draft202012Validator(schema).iter_errors(cfg))
    assert errors and list(errors[0].absolute_path) == ["diagnostics", *path]


def test_partial_gradient_methods_match_the_attack_registry():
    assert PARTIAL_GRADIENT_METHODS == {
        m for m in ATTACKS.names() if ATTACKS[m].upper_bound or not ATTACKS[m].white_box
    }


def test_each_catalogued_diagnostic_has_its_command_settings_and_stage():
    """One entry in diagnostics/catalog.py is all the workflow needs: the CLI runs its command, the
    schema holds its settings section, DVC's diagnostics stage runs its rule."""
    import dvc_pipeline  # tools/dvc_pipeline.py

    from atop.code_closure import command_closure

    schema = yaml.safe_load((ROOT / "config" / "schema.yaml").read_text())
    sections = schema["properties"]["diagnostics"]["properties"]
    for name in ("name", "command", "folder"):
        values = [getattr(diagnostic, name) for diagnostic in catalog.PER_DEFENSE]
        assert len(set(values)) == len(values), name
    for diagnostic in catalog.PER_DEFENSE:
        assert diagnostic.section in sections, diagnostic
        assert any("/diagnostics/" in path for path in command_closure(ROOT, diagnostic.command)), diagnostic
        assert set(diagnostic.evaluation) <= set(schema["properties"]["evaluation"]["properties"]), diagnostic
        assert diagnostic.purifier_stage in {None, *(DEFENSE_KINDS[kind].purifier_stage for kind in DEFENSE_KINDS)}
    assert dvc_pipeline.STAGES["diagnostics"] == list(catalog.RULES)


def test_a_null_distortion_eps_is_the_fine_tuning_eps(config):
    distortion = catalog.BY_NAME["boundary_distortion"]
    assert catalog.settings(distortion, config)["eps"] == config["finetune"]["eps"]
    config["diagnostics"]["distortion"]["eps"] = 0.1
    assert catalog.settings(distortion, config)["eps"] == 0.1
    measures = catalog.settings(catalog.BY_NAME["robustness_measures"], config)
    assert measures == config["diagnostics"]["measures"]


# --------------------------------------------------------------------------- the workflow


def test_tiny_dag_runs_every_diagnostic_per_defense(workflow_dir):
    from conftest import run_snakemake

    plan = run_snakemake(workflow_dir, "-n", "--quiet", "rules", "all", "--configfile", "config/tiny.yaml")
    assert plan.returncode == 0, plan.stderr[-2000:]
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", plan.stdout + plan.stderr, flags=re.MULTILINE))
    defenses = yaml.safe_load((ROOT / "config" / "tiny.yaml").read_text())["evaluation"]["defenses"]
    for diagnostic in catalog.PER_DEFENSE:  # one job per defense it covers
        stages = [DEFENSE_KINDS[split_defense(d)[0]].purifier_stage for d in defenses]
        covered = [s for s in stages if diagnostic.purifier_stage in {None, s}]
        assert counts[diagnostic.name] == str(len(covered)), diagnostic.name
    assert counts["gradient_concentration"] == counts["robustness_measures"] == str(len(defenses))
    assert counts["diagnostic_pictures"] == counts["diagnostics_summary"] == "1"


def test_disjoint_cosine_measures_the_k_draw_cosine_to_the_expected_gradient():
    """Equal and log-normal gradient sizes (issue 23: the old prediction said 0.26 / 0.47 / 0.73 / 0.90 where the
    truth was 0.64 / 0.75 / 0.84 / 0.90 at k = 1 / 4 / 16 / 64): the measured curve tracks the truth."""
    torch.manual_seed(0)
    images, dim, draws = 48, 200, 128
    mu = torch.randn(images, dim)
    mu = mu / mu.norm(dim=1, keepdim=True)

    def draw(shape):
        noise = torch.randn(*shape, images, dim) / dim**0.5
        scale = torch.exp(2.0 * torch.randn(*shape, images, 1))  # log-normal sizes, sigma 2
        return scale * (mu + 1.5 * noise)

    pool = draw((draws,))
    ks = [1, 4, 16, 64]
    measured = disjoint_cosine(pool, ks).median(dim=1).values
    for value, k in zip(measured.tolist(), ks, strict=True):
        truth = torch.nn.functional.cosine_similarity(draw((k, 100)).mean(dim=0), mu, dim=2).median()
        assert abs(value - truth.item()) < 0.08, (k, value, truth.item())
    assert disjoint_cosine(pool[:8], [8]).isnan().all(), "k above K / 2: no measurement"
    with pytest.raises(ValueError, match="at least 2 draws"):
        disjoint_cosine(pool[:1], [1])


class ShatteredLinear(nn.Module):
    """A randomized toy defense whose gradients are mostly noise: a linear classifier plus, per forward
    pass, a term a sin(w r.x) / w with a fresh r ~ N(0, I). The term moves a logit by at most a / w (too
    little to change a prediction) but adds a r cos(w r.x) to the input gradient, whose expectation is
    about zero: the true gradient is the linear one, and few EOT samples cannot find it."""

    randomized = True

    def __init__(self, weight: torch.Tensor, noise: float, frequency: float = 1000.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight)
        self.noise, self.frequency = noise, frequency

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(1)
        r = torch.randn_like(flat)
        shatter = self.noise * torch.sin(self.frequency * (r * flat).sum(1)) / self.frequency
        margin = (flat - 0.5) @ self.weight + shatter
        return torch.stack([margin, -margin], dim=1)


def _eot_fractions(model, x, y, eot: int, seed: int) -> list[float]:
    from atop.metrics import correct_per_draw

    attack = build_attack("eot_pgd", model, {"eps": 0.1, "alpha": 0.025, "steps": 10, "eot": eot})
    torch.manual_seed(seed)
    adversarial = attack(x, y).detach()
    return correct_per_draw(model, adversarial, y, 4, 256).float().mean(0).tolist()


@pytest.mark.parametrize("noise, too_small", [(0.15, True), (0.0, False)])
def test_eot_check_fails_where_eot_4_is_truly_too_small(noise, too_small):
    """Real attacks on a constructed defense: with shattered gradients EOT-PGD at EOT 4 leaves images
    that EOT 64 breaks, and the check says EOT TOO SMALL; with clean gradients (noise 0) it passes."""
    torch.manual_seed(0)
    dim = 64
    weight = torch.ones(dim) / dim
    x = (0.5 + 0.06 + 0.02 * torch.rand(96, 1, 8, 8)).clamp(0, 1)  # class 0, margin ~0.07 < eps 0.1
    y = torch.zeros(96, dtype=torch.long)
    model = ShatteredLinear(weight, noise)
    at_4, at_64 = _eot_fractions(model, x, y, 4, 1), _eot_fractions(model, x, y, 64, 2)
    results = [
        _result("toy", "eot_pgd", 4, fractions=at_4),
        _sweep_point("toy", 4, at_4),
        _sweep_point("toy", 64, at_64),
    ]
    (record,) = eot_sufficiency_checks([], results)
    if too_small:
        assert record["accuracy"][0] > record["accuracy"][1] + 0.2
        assert record["passed"] is False and "EOT TOO SMALL" in record["detail"]
    else:
        assert record["accuracy"] == [0.0, 0.0] and record["passed"] is True


def test_rules_made_in_a_loop_never_name_the_loop_variable_in_their_shell_text():
    """Snakemake evaluates a rule's shell text again when the job runs, after the loop has ended:
    a loop variable there names the last entry for every rule (every per-defense diagnostic job
    once ran boundary-distortion). Values reach the shell through params, bound when defined."""
    for smk in sorted((ROOT / "rules").glob("*.smk")):
        lines = smk.read_text().splitlines()
        for start, line in enumerate(lines):
            loop = re.match(r"for (\w+) in ", line)
            if not loop:
                continue
            body = list(itertools.takewhile(lambda text: not text or text.startswith(" "), lines[start + 1 :]))
            in_shell = False
            for text in body:
                indent = len(text) - len(text.lstrip())
                if text.strip() in ("shell:", "run:"):
                    in_shell, shell_indent = True, indent
                elif in_shell and text.strip() and indent <= shell_indent:
                    in_shell = False
                if in_shell:
                    assert not re.search(rf"\b{loop.group(1)}\b", text), f"{smk.name}: {text.strip()}"
