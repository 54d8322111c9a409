"""Overfitting monitors, their detectors, decision-boundary distortion and the checked-FGSM fine-tuning attack."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from atop.config import ConfigError
from atop.diagnostics.distortion import boundary_distortion
from atop.diagnostics.overfitting import (
    COLUMNS,
    OverfittingMonitor,
    catastrophic_overfitting,
    overfitting_flags,
    robust_overfitting,
)
from atop.diagnostics.settings import (
    MONITOR_DEFAULTS,
    OVERFITTING_DEFAULTS,
    check_overfitting_settings,
    distortion_settings,
    monitor_settings,
    overfitting_thresholds,
)
from atop.finetune_attacks import FINETUNE_ATTACKS, CheckedFGSM
from atop.models import build_classifier
from atop.train.adversarial import train_adversarial

from synthetic_data import brightness_data

CPU = torch.device("cpu")
SIZE = 16


def _classifier(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_classifier("small_cnn", num_classes=2, mean=[0.5] * 3, std=[0.25] * 3, image_size=SIZE, width=4).eval()


# ---------------------------------------------------------------- detectors on synthetic curves


def _curve(**columns):
    n = len(next(iter(columns.values())))
    return [{"epoch": i + 1, **{k: v[i] for k, v in columns.items()}} for i in range(n)]


def test_catastrophic_overfitting_fires_on_the_fgsm_spike_with_pgd_collapse():
    # Kim et al.'s picture: FGSM accuracy jumps while PGD accuracy falls to ~0 at epoch 4
    rows = _curve(train_fgsm=[0.30, 0.35, 0.40, 0.85, 0.90], train_pgd=[0.25, 0.30, 0.33, 0.02, 0.01])
    result = catastrophic_overfitting(rows, fgsm_rise=0.1, pgd_drop=0.2, split="train")
    assert result == {"split": "train", "monitored": True, "detected": True, "epochs": [4]}


def test_catastrophic_overfitting_stays_quiet_on_healthy_training():
    # both rise together; a small PGD dip (0.05) and an FGSM rise without a PGD fall do not count
    rows = _curve(train_fgsm=[0.30, 0.45, 0.50, 0.62, 0.64], train_pgd=[0.20, 0.30, 0.25, 0.34, 0.36])
    assert not catastrophic_overfitting(rows, 0.1, 0.2, "train")["detected"]
    # no monitor columns: not monitored, nothing detected
    assert catastrophic_overfitting(_curve(train_loss=[1.0, 0.5]), 0.1, 0.2) == {
        "split": "train",
        "monitored": False,
        "detected": False,
        "epochs": [],
    }
    with pytest.raises(ValueError, match="positive"):
        catastrophic_overfitting(rows, 0.0, 0.2)


def test_robust_overfitting_fires_when_val_pgd_falls_while_train_pgd_rises():
    rows = _curve(val_pgd=[0.30, 0.42, 0.40, 0.35, 0.33], train_pgd=[0.30, 0.45, 0.55, 0.65, 0.75])
    result = robust_overfitting(rows, robust_drop=0.05, train_rise=0.0)
    assert result["detected"] and result["best_epoch"] == 2
    assert result["val_pgd_drop"] == pytest.approx(0.09) and result["train_pgd_rise"] == pytest.approx(0.30)
    # the same validation fall with training robustness falling too is not overfitting
    falling = _curve(val_pgd=[0.30, 0.42, 0.40, 0.35, 0.33], train_pgd=[0.30, 0.45, 0.40, 0.38, 0.36])
    assert not robust_overfitting(falling, 0.05, 0.0)["detected"]
    # a fall smaller than robust_drop is noise
    small = _curve(val_pgd=[0.30, 0.42, 0.41, 0.40, 0.39], train_pgd=[0.30, 0.45, 0.55, 0.65, 0.75])
    assert not robust_overfitting(small, 0.05, 0.0)["detected"]


def test_overfitting_flags_combine_both_splits():
    rows = _curve(
        train_fgsm=[0.3, 0.3, 0.3],
        train_pgd=[0.2, 0.2, 0.2],
        val_fgsm=[0.3, 0.5, 0.9],
        val_pgd=[0.3, 0.35, 0.05],
    )
    flags = overfitting_flags(rows, OVERFITTING_DEFAULTS)
    assert flags["monitored"] and flags["catastrophic"] == {"detected": True, "epochs": {"train": [], "val": [3]}}


# ---------------------------------------------------------------- settings refused with clear errors


def test_bad_monitor_and_detector_settings_are_refused():
    assert monitor_settings(None, "finetune.monitor") == MONITOR_DEFAULTS
    with pytest.raises(ConfigError, match=r"finetune\.monitor\.steps"):
        monitor_settings({"steps": 0}, "finetune.monitor")
    with pytest.raises(ConfigError, match=r"adversarial_training\.monitor\.train_images"):
        monitor_settings({"train_images": -1}, "adversarial_training.monitor")
    with pytest.raises(ConfigError, match="unknown keys"):
        monitor_settings({"pgd_steps": 5}, "finetune.monitor")
    with pytest.raises(ConfigError, match=r"overfitting\.pgd_drop = 0"):
        overfitting_thresholds({"pgd_drop": 0})
    with pytest.raises(ConfigError, match=r"overfitting\.fgsm_rise"):
        overfitting_thresholds({"fgsm_rise": 1.5})
    with pytest.raises(ConfigError, match=r"distortion\.points = 1"):
        distortion_settings({"points": 1})
    with pytest.raises(ConfigError, match=r"distortion\.eps = -0\.1.*negative"):
        distortion_settings({"eps": -0.1})
    config = {"finetune": {"monitor": {"eot": 0}}, "diagnostics": {}}
    with pytest.raises(ConfigError, match=r"finetune\.monitor\.eot"):
        check_overfitting_settings(config)
    check_overfitting_settings({"finetune": {}, "diagnostics": {"distortion": {"eps": "8/255"}}})


# ---------------------------------------------------------------- decision-boundary distortion


class Linear(nn.Module):
    def __init__(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        super().__init__()
        self.weight, self.bias = nn.Parameter(weight), nn.Parameter(bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.weight.T + self.bias


class Bump(nn.Module):
    """Class 0 everywhere except a slab mean(x) in (0.56, 0.59), where it is class 1 - a distorted
    boundary: an image at mean 0.5 stepping to 0.7 is right at both ends and wrong in between."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.flatten(1).mean(1) * self.scale
        inside = ((m > 0.56) & (m < 0.59)).float()
        # the gradient of CE points to larger means (class 0's logit falls with m)
        return torch.stack([-m + 10 * (1 - inside), 9 + 0 * m], dim=1)


def test_an_exactly_linear_model_has_zero_distortion():
    torch.manual_seed(0)
    model = Linear(torch.randn(3, 3 * 8 * 8), torch.randn(3))
    x = torch.rand(64, 3, 8, 8)
    y = model(x).argmax(1)  # right on every clean image
    result = boundary_distortion(model, x, y, eps=0.02, points=100)
    assert result["eligible"] > 0, "the test needs images right at both ends"
    assert result["distortion"] == 0.0 and result["distorted"] == 0


def test_a_bumpy_boundary_is_distorted():
    x = torch.full((4, 3, 8, 8), 0.5)
    y = torch.zeros(4, dtype=torch.long)
    result = boundary_distortion(Bump(), x, y, eps=0.2, points=100)
    assert result["eligible"] == 4 and result["distortion"] == 1.0
    # with too few points the slab falls between them: distortion is a lower bound that m tightens
    assert boundary_distortion(Bump(), x, y, eps=0.2, points=2)["distortion"] == 0.0


def test_distortion_of_a_randomized_defense_pools_its_draws_and_keeps_the_rngs():
    x, y = torch.full((5, 3, 8, 8), 0.5), torch.zeros(5, dtype=torch.long)
    defense = RandomClassifier(Bump())
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    result = boundary_distortion(defense, x, y, eps=0.2, points=100, draws=3)
    assert torch.equal(torch.rand(3), before), "the global RNG is handed back"
    assert result["draws"] == 3 and result["per_draw"] == [1.0, 1.0, 1.0]
    assert result["eligible"] == 15 and result["distortion"] == 1.0  # pooled: 15 of 15 segments
    # nothing right at both ends: no figure (JSON null), not a NaN
    empty = boundary_distortion(Bump(), x, torch.ones(5, dtype=torch.long), eps=0.2, points=10)
    assert empty["eligible"] == 0 and empty["distortion"] is None and empty["per_draw"] == [None]
    # a deterministic model is measured once whatever draws says
    assert boundary_distortion(Bump(), x, y, eps=0.2, points=100, draws=3)["draws"] == 1
    with pytest.raises(ConfigError, match="points"):
        boundary_distortion(defense, x, y, eps=0.1, points=1)
    with pytest.raises(ConfigError, match="eps"):
        boundary_distortion(defense, x, y, eps=-0.1)


class RandomClassifier(nn.Module):
    """Gaussian noise then a classifier, reseedable like a defended model."""

    randomized = True

    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        self.classifier = classifier
        self.seed = 0

    def reseed(self, seed: int) -> None:
        self.seed = seed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(self.seed))
        return self.classifier(x + 0.01 * noise)


# ---------------------------------------------------------------- monitors


def test_monitor_columns_are_ordered_and_repeatable():
    data = brightness_data(32, 32, 8, 0, SIZE)
    settings = {**MONITOR_DEFAULTS, "train_images": 16, "val_images": 16, "steps": 3}
    monitor = OverfittingMonitor(
        (data.images("train"), data.labels("train")), (data.images("val"), data.labels("val")), 16 / 255, settings
    )
    model = _classifier()
    torch.manual_seed(7)
    expected_next = torch.rand(2)
    torch.manual_seed(7)
    first = monitor(model)
    assert torch.equal(torch.rand(2), expected_next), "the monitor hands the global RNG back"
    assert tuple(first) == COLUMNS and first == monitor(model)
    for split in ("train", "val"):
        assert (
            0 <= first[f"{split}_pgd"] <= first[f"{split}_fgsm"] + 1 / 16
            and first[f"{split}_pgd"] <= first[f"{split}_clean"]
        )
    off = OverfittingMonitor(
        (data.images("train"), data.labels("train")),
        (data.images("val"), data.labels("val")),
        0.1,
        {**settings, "train_images": 0, "val_images": 0},
    )
    assert not off.enabled and off(model) == {}


AT_CLASSIFIER = {
    "arch": "small_cnn",
    "arch_params": {"width": 4},
    "epochs": 2,
    "batch_size": 16,
    "lr": 1e-2,
    "weight_decay": 0.0,
}
AT_ATTACK = {"eps": "8/255", "alpha": "2/255", "steps": 2, "val_steps": 2}


def test_monitoring_changes_no_trained_weight(tmp_path):
    data = brightness_data(32, 16, 8, 0, SIZE)
    off = {**AT_ATTACK, "monitor": {"train_images": 0, "val_images": 0}}
    on = {**AT_ATTACK, "monitor": {"train_images": 16, "val_images": 16, "steps": 2}}
    plain, _, plain_history = train_adversarial(data, AT_CLASSIFIER, off, 0, CPU, tmp_path / "off.resume")
    monitored, _, history = train_adversarial(data, AT_CLASSIFIER, on, 0, CPU, tmp_path / "on.resume")
    for name, tensor in plain.state_dict().items():
        assert torch.equal(monitored.state_dict()[name], tensor)
    assert set(COLUMNS) <= history[0].keys() and not set(COLUMNS) & plain_history[0].keys()
    assert [r["val_robust_accuracy"] for r in history] == [r["val_robust_accuracy"] for r in plain_history]


# ---------------------------------------------------------------- checked FGSM (Kim et al.'s fix)


def test_checked_fgsm_takes_the_smallest_misclassified_point():
    x = torch.full((2, 3, 8, 8), 0.5)
    y = torch.zeros(2, dtype=torch.long)
    model = Bump()
    # c = 5 checks means 0.54, 0.58, 0.62, 0.66, 0.7: only 0.58 lies in the slab (0.56, 0.59)
    checked = CheckedFGSM(model, eps=0.2, check_points=5)(x, y)
    assert torch.allclose(checked, torch.full_like(x, 0.58), atol=1e-6)
    assert (model(checked).argmax(1) == 1).all()
    # c = 4 (0.55, 0.6, 0.65, 0.7) misses the slab: the full step
    assert torch.allclose(CheckedFGSM(model, eps=0.2, check_points=4)(x, y), torch.full_like(x, 0.7))
    # c = 1 is plain FGSM: the full step
    assert torch.allclose(CheckedFGSM(model, eps=0.2, check_points=1)(x, y), torch.full_like(x, 0.7))
    # where no point is misclassified, the full step
    right = Linear(torch.zeros(2, 3 * 8 * 8), torch.tensor([1.0, 0.0]))
    assert torch.equal(CheckedFGSM(right, eps=0.1, check_points=3)(x, y), x)  # zero gradient: sign 0, no step
    with pytest.raises(ValueError, match="check_points"):
        CheckedFGSM(model, eps=0.1, check_points=0)
    entry = FINETUNE_ATTACKS["fgsm_checked"]
    assert entry.norm == "Linf"
    built = entry.build(copy.deepcopy(model), None, {"eps": 0.2, "check_points": 4})
    assert isinstance(built, CheckedFGSM) and built.check_points == 4


# ---------------------------------------------------------------- the report's flags and figure


def test_report_flags_and_plots_the_monitored_stages(tmp_path):
    import pandas as pd

    from atop.report.figures import training_curves_figure
    from atop.report.overfitting import overfitting_lines, stage_flags

    curves = tmp_path / "curves"
    (curves / "purifier_finetune").mkdir(parents=True)
    collapsing = _curve(
        train_loss=[1.0, 0.8, 0.7, 0.6],
        train_clean=[0.6, 0.7, 0.8, 0.9],
        train_fgsm=[0.3, 0.35, 0.4, 0.9],
        train_pgd=[0.25, 0.3, 0.35, 0.0],
        val_clean=[0.6, 0.7, 0.8, 0.9],
        val_fgsm=[0.3, 0.35, 0.4, 0.5],
        val_pgd=[0.25, 0.3, 0.3, 0.28],
    )
    pd.DataFrame(collapsing).to_csv(curves / "classifier_adversarial.csv", index=False)
    pd.DataFrame(_curve(train_loss=[1.0, 0.5], val_accuracy=[0.5, 0.6])).to_csv(curves / "classifier.csv", index=False)
    healthy = _curve(**{c: [0.3, 0.35] for c in COLUMNS}, ce=[0.4, 0.3])
    pd.DataFrame(healthy).to_csv(curves / "purifier_finetune" / "gan.csv", index=False)
    paths = [curves / "classifier.csv", curves / "classifier_adversarial.csv", curves / "purifier_finetune" / "gan.csv"]
    flags = stage_flags(paths)
    assert [f["stage"] for f in flags] == ["classifier adversarial", "purifier finetune gan"]
    assert flags[0]["catastrophic"]["epochs"] == {"train": [4], "val": []} and not flags[1]["catastrophic"]["detected"]
    lines = overfitting_lines(flags)
    assert "- classifier adversarial: **CATASTROPHIC OVERFITTING** (train batch epoch 4)." in lines
    assert "- purifier finetune gan: neither detected." in lines
    assert overfitting_lines([])[-1] == "- No training stage of this run was monitored."
    with pytest.raises(ConfigError, match="pgd_drop"):
        stage_flags(paths, {"pgd_drop": 0})
    written = training_curves_figure(paths, tmp_path / "training_curves")
    assert {p.suffix for p in written} == {".png", ".svg"} and all(p.stat().st_size > 0 for p in written)
    svg = (tmp_path / "training_curves.svg").read_text()
    assert "overfitting monitor" in svg and "DETECTED: catastrophic overfitting" in svg


# ---------------------------------------------------------------- GPU-hour estimate counts them


def test_gpu_hours_counts_the_monitors_and_the_distortion():
    import importlib.util

    import yaml

    from conftest import REPO
    from synthetic_data import PURIFIER_SPEC

    spec = importlib.util.spec_from_file_location("gpu_hours", REPO / "benchmarks" / "gpu_hours.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = yaml.safe_load((REPO / "config" / "tiny.yaml").read_text())
    config["purifiers"] = {"g": {**PURIFIER_SPEC}}
    attacks = {"pgd": {"method": "pgd_classifier", "eps": 0.1, "alpha": 0.02, "steps": 5}}
    config["evaluation"] = {"defenses": ["at", "atop-g"], "attacks": attacks}
    base = module.estimate(config)["flops"]
    assert base["overfitting_monitors"] > 0 and base["diagnostics"] > 0
    config["finetune"] = {**config["finetune"], "monitor": {"train_images": 0, "val_images": 0}}
    config["adversarial_training"] = {**config["adversarial_training"], "monitor": {"train_images": 0, "val_images": 0}}
    assert module.estimate(config)["flops"]["overfitting_monitors"] == 0
    config["diagnostics"] = {**config.get("diagnostics", {}), "distortion": {"points": 1000}}
    assert module.estimate(config)["flops"]["diagnostics"] > base["diagnostics"]
