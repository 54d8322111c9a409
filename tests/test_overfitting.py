"""Overfitting monitors, their detectors, decision-boundary distortion and the checked-FGSM fine-tuning attack."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from atop.config import ConfigError
from atop.diagnostics.detectors import (
    COLUMNS,
    catastrophic_overfitting,
    overfitting_flags,
    robust_overfitting,
)
from atop.diagnostics.distortion import boundary_distortion
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
from atop.train.monitor import OverfittingMonitor

from synthetic_data import brightness_data

CPU = torch.device("cpu")
SIZE = 16


def _classifier(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_classifier("small_cnn", num_classes=2, mean=[0.5] * 3, std=[0.25] * 3, image_size=SIZE, width=4).eval()


# ---------------------------------------------------------------- detectors on synthetic curves


def _curve(images: int | None = 100, **columns):
    """A curve's rows; ``images`` fixed images per batch (the monitor writes it beside the accuracies)."""
    n = len(next(iter(columns.values())))
    sizes = {} if images is None else {"train_images": images, "val_images": images}
    return [{"epoch": i + 1, **sizes, **{k: v[i] for k, v in columns.items()}} for i in range(n)]


def test_catastrophic_overfitting_fires_on_the_fgsm_spike_with_pgd_collapse():
    # Kim et al.'s picture: FGSM accuracy jumps while PGD accuracy falls to ~0 at epoch 4
    rows = _curve(train_fgsm=[0.30, 0.35, 0.40, 0.85, 0.90], train_pgd=[0.25, 0.30, 0.33, 0.02, 0.01])
    result = catastrophic_overfitting(rows, fgsm_rise=0.1, pgd_drop=0.2, split="train")
    assert result["detected"] and result["epochs"] == [4] and result["images"] == 100
    assert result["level"] == pytest.approx(0.05 / (2 * 4)), "alpha split over 2 batches x 4 epoch changes"
    # the same picture on 8 images is within what chance does over 4 epoch changes
    assert not catastrophic_overfitting(_curve(images=8, **{k: r for k, r in _columns(rows).items()}), 0.1, 0.2)[
        "detected"
    ]


def _columns(rows):
    return {k: [r[k] for r in rows] for k in rows[0] if k not in ("epoch", "train_images", "val_images")}


def test_catastrophic_overfitting_stays_quiet_on_healthy_training():
    # both rise together; a small PGD dip (0.05) and an FGSM rise without a PGD fall do not count
    rows = _curve(train_fgsm=[0.30, 0.45, 0.50, 0.62, 0.64], train_pgd=[0.20, 0.30, 0.25, 0.34, 0.36])
    assert not catastrophic_overfitting(rows, 0.1, 0.2, "train")["detected"]
    # no monitor columns, or no image counts: not monitored, nothing detected
    for unmonitored in (
        _curve(train_loss=[1.0, 0.5]),
        _curve(images=None, train_fgsm=[0.3, 0.9], train_pgd=[0.3, 0.0]),
    ):
        assert catastrophic_overfitting(unmonitored, 0.1, 0.2) == {
            "split": "train",
            "monitored": False,
            "detected": False,
            "epochs": [],
        }
    with pytest.raises(ValueError, match="positive"):
        catastrophic_overfitting(rows, 0.0, 0.2)


def test_robust_overfitting_fires_when_val_pgd_falls_while_train_pgd_rises():
    rows = _curve(1000, val_pgd=[0.30, 0.42, 0.40, 0.35, 0.33], train_pgd=[0.30, 0.45, 0.55, 0.65, 0.75])
    result = robust_overfitting(rows, robust_drop=0.05, train_rise=0.0)
    assert result["detected"] and result["best_epoch"] == 2 and result["p_value"] < 1e-3
    assert result["val_pgd_drop"] == pytest.approx(0.09) and result["train_pgd_rise"] == pytest.approx(0.30)
    # the same fall on 32 images is within what chance does over 5 epochs: not detected, and the power said
    small_n = robust_overfitting(_curve(32, **_columns(rows)), 0.05, 0.0)
    assert not small_n["detected"] and small_n["detectable_drop"] > 0.09
    # the same validation fall with training robustness falling too is not overfitting
    falling = _curve(1000, val_pgd=[0.30, 0.42, 0.40, 0.35, 0.33], train_pgd=[0.30, 0.45, 0.40, 0.38, 0.36])
    assert not robust_overfitting(falling, 0.05, 0.0)["detected"]
    # a fall smaller than robust_drop is not flagged, however significant
    small = _curve(100000, val_pgd=[0.30, 0.42, 0.41, 0.40, 0.39], train_pgd=[0.30, 0.45, 0.55, 0.65, 0.75])
    assert (
        robust_overfitting(small, 0.05, 0.0)["p_value"] < 1e-6 and not robust_overfitting(small, 0.05, 0.0)["detected"]
    )


def test_exact_thresholds_count_in_whole_images():
    """0.85 -> 0.80 is a drop of exactly 0.05 (0.04999999999999993 in floats): it meets robust_drop 0.05."""
    assert 0.85 - 0.80 < 0.05
    rows = _curve(2000, val_pgd=[0.85, 0.80], train_pgd=[0.5, 0.6])
    assert robust_overfitting(rows, robust_drop=0.05, train_rise=0.0)["detected"]
    assert not robust_overfitting(rows, robust_drop=0.0501, train_rise=0.0)["detected"]
    # train_rise: "more than", so a rise of exactly train_rise does not count
    assert not robust_overfitting(rows, robust_drop=0.05, train_rise=0.1)["detected"]
    # catastrophic: a rise of exactly fgsm_rise and a fall of exactly pgd_drop count
    co = _curve(2000, train_fgsm=[0.3, 0.4], train_pgd=[0.7, 0.5])
    assert catastrophic_overfitting(co, fgsm_rise=0.1, pgd_drop=0.2)["epochs"] == [2]
    assert not catastrophic_overfitting(co, fgsm_rise=0.1001, pgd_drop=0.2)["detected"]


def test_overfitting_flags_combine_both_splits_and_warn_of_a_weak_pgd():
    rows = _curve(
        train_fgsm=[0.3, 0.3, 0.3],
        train_pgd=[0.2, 0.25, 0.2],
        val_fgsm=[0.3, 0.5, 0.9],
        val_pgd=[0.35, 0.35, 0.05],
    )
    flags = overfitting_flags(rows, OVERFITTING_DEFAULTS)
    assert flags["monitored"] and flags["catastrophic"] == {"detected": True, "epochs": {"train": [], "val": [3]}}
    assert flags["pgd_above_fgsm"] == {"train": [], "val": [1]} and flags["epochs_run"] == 3


# ---------------------------------------------------------------- the detectors' false-alarm rates, simulated

SIMULATIONS = 1000
MONITOR_IMAGES = 32  # the default experiment's monitor batches (config/config.yaml)
EPOCHS = 30


def _tolerance(rate: float = 0.05) -> float:
    return 2 * (rate * (1 - rate) / SIMULATIONS) ** 0.5


def _measured(rng, images: int, accuracy, correlation: float) -> list[float]:
    """Accuracy of one batch per epoch around the true ``accuracy`` (one per epoch): each image's
    outcome shares a fixed per-image part (the same images every epoch) with weight ``correlation``."""
    easy = rng.random(images)  # fixed per image: the same images every epoch
    rows = []
    for p in accuracy:
        fresh = rng.random(images)
        u = np.where(rng.random(images) < correlation, easy, fresh)
        rows.append(float((u < p).mean()))
    return rows


@pytest.mark.parametrize("correlation", [0.0, 0.7])
def test_robust_overfitting_keeps_its_false_alarm_rate_on_flat_validation_curves(correlation):
    """No overfitting: validation PGD flat at 0.8, training PGD rising; 32 images, 30 epochs."""
    rng = np.random.default_rng(23)
    flat = [0.8] * EPOCHS
    rising = np.linspace(0.4, 0.95, EPOCHS)
    alarms = 0
    for _ in range(SIMULATIONS):
        rows = _curve(
            MONITOR_IMAGES,
            val_pgd=_measured(rng, MONITOR_IMAGES, flat, correlation),
            train_pgd=_measured(rng, MONITOR_IMAGES, rising, correlation),
        )
        alarms += robust_overfitting(rows, OVERFITTING_DEFAULTS["robust_drop"], OVERFITTING_DEFAULTS["train_rise"])[
            "detected"
        ]
    assert alarms / SIMULATIONS <= 0.05 + _tolerance()


@pytest.mark.parametrize("scenario", ["fgsm_rising", "both_flat", "pgd_drifting_down"])
def test_catastrophic_overfitting_keeps_its_false_alarm_rate_without_a_collapse(scenario):
    """No collapse, on both batches: FGSM rising steadily (healthy training), everything flat, or PGD
    drifting down slowly; 32 images, 30 epochs, the per-image outcomes correlated across epochs."""
    rng = np.random.default_rng({"fgsm_rising": 1, "both_flat": 2, "pgd_drifting_down": 3}[scenario])
    fgsm = {"fgsm_rising": np.linspace(0.2, 0.9, EPOCHS), "both_flat": [0.5] * EPOCHS}.get(scenario, [0.5] * EPOCHS)
    pgd = np.linspace(0.5, 0.2, EPOCHS) if scenario == "pgd_drifting_down" else [0.4] * EPOCHS
    alarms = 0
    for _ in range(SIMULATIONS):
        columns = {}
        for split in ("train", "val"):
            columns[f"{split}_fgsm"] = _measured(rng, MONITOR_IMAGES, fgsm, 0.5)
            columns[f"{split}_pgd"] = _measured(rng, MONITOR_IMAGES, pgd, 0.5)
        flags = overfitting_flags(_curve(MONITOR_IMAGES, **columns), OVERFITTING_DEFAULTS)
        alarms += flags["catastrophic"]["detected"]
    assert alarms / SIMULATIONS <= 0.05 + _tolerance()


def test_the_detectors_find_real_overfitting_at_the_default_sizes():
    """Power, where it matters: Kim et al.'s collapse and Rice et al.'s decline, 32 images, 8 epochs."""
    rng = np.random.default_rng(5)
    co = ro = 0
    for _ in range(200):
        fgsm = [0.3, 0.35, 0.4, 0.42, 0.9, 0.92, 0.95, 0.95]
        pgd = [0.25, 0.3, 0.33, 0.35, 0.0, 0.0, 0.0, 0.0]
        rows = _curve(MONITOR_IMAGES, train_fgsm=_measured(rng, 32, fgsm, 0.5), train_pgd=_measured(rng, 32, pgd, 0.5))
        co += catastrophic_overfitting(rows, 0.1, 0.2)["detected"]
        val = [0.5, 0.7, 0.8, 0.75, 0.6, 0.5, 0.45, 0.4]
        train = [0.5, 0.7, 0.8, 0.85, 0.9, 0.95, 0.97, 0.99]
        rows = _curve(MONITOR_IMAGES, val_pgd=_measured(rng, 32, val, 0.5), train_pgd=_measured(rng, 32, train, 0.5))
        ro += robust_overfitting(rows, 0.05, 0.0)["detected"]
    assert co / 200 > 0.75 and ro / 200 > 0.75  # 0.85 and 0.85 over 1000 curves (issue 23 closing note)


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
    assert tuple(first) == COLUMNS + ("train_images", "val_images") and first == monitor(model)
    assert first["train_images"] == first["val_images"] == 16
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


def test_monitor_hands_back_every_modules_mode_and_its_pgd_reaches_the_boundary():
    data = brightness_data(32, 32, 8, 0, SIZE)
    batches = ((data.images("train"), data.labels("train")), (data.images("val"), data.labels("val")))
    settings = {**MONITOR_DEFAULTS, "train_images": 32, "val_images": 32, "steps": 3, "eot": 1}
    model = RandomClassifier(_classifier())
    model.eval()
    model.classifier.train()  # a part in train mode inside an eval-mode model
    row = OverfittingMonitor(*batches, 16 / 255, settings)(model)
    assert not model.training and model.classifier.training, "each module's own mode comes back"
    # 3 steps of 2.5 eps / 3 travel 2.5 eps: PGD at least as strong as FGSM on every batch
    assert OverfittingMonitor(*batches, 16 / 255, settings).attacks(model)["pgd"].alpha == pytest.approx(
        2.5 * 16 / 255 / 3
    )
    for split in ("train", "val"):
        assert row[f"{split}_pgd"] <= row[f"{split}_fgsm"]


def test_monitor_warns_when_its_pgd_scores_above_fgsm(caplog):
    from atop.report.overfitting import overfitting_lines

    rows = _curve(32, train_fgsm=[0.5, 0.5], train_pgd=[0.6, 0.4], val_fgsm=[0.5, 0.5], val_pgd=[0.4, 0.4])
    flags = [{"stage": "purifier finetune", **overfitting_flags(rows, OVERFITTING_DEFAULTS)}]
    line = overfitting_lines(flags)[-1]
    assert "WARNING: the monitor's PGD scored above its FGSM (train batch epoch 1)" in line
    assert "a fall from the best" in line, "the robust-overfitting test's power is stated"


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


class Ramp(nn.Module):
    """Class 0 while the mean pixel stays below ``edge``, class 1 above: the CE gradient of class 0
    points to larger means, so one signed step raises every pixel."""

    def __init__(self, edge: float) -> None:
        super().__init__()
        self.edge = nn.Parameter(torch.tensor(edge))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.flatten(1).mean(1)
        return torch.stack([20 * (self.edge - m), torch.zeros_like(m)], dim=1)


def test_checked_fgsm_as_published_random_start_step_alpha_and_checks():
    """Kim et al.'s reference code: a random start, a step of alpha, the perturbation checked at c - 1
    points, the clean image where the start is already misclassified; the model it is given is the
    one it checks (the defense being fine-tuned)."""
    x = torch.full((64, 1, 8, 8), 0.5)
    y = torch.zeros(64, dtype=torch.long)
    eps = 0.1
    # never misclassified in the ball: the full step, from a random start, which plain FGSM is not
    far = Ramp(0.9)
    torch.manual_seed(0)
    first = CheckedFGSM(far, eps=eps, alpha=1.25 * eps, check_points=3)(x, y)
    torch.manual_seed(1)
    second = CheckedFGSM(far, eps=eps, alpha=1.25 * eps, check_points=3)(x, y)
    assert not torch.equal(first, second), "the random start makes each call differ"
    assert (first - x).abs().max() <= eps + 1e-6 and first.min() >= 0 and first.max() <= 1
    # start in [0.4, 0.6], step +0.125, projected: every pixel ends in [0.525, 0.6]
    assert first.min() >= 0.525 - 1e-6 and first.max() <= 0.6 + 1e-6
    plain = (x + eps * torch.ones_like(x)).clamp(0, 1)  # plain FGSM from x: every pixel 0.6
    assert not torch.allclose(first, plain), "it differs from plain FGSM"
    # wrong beyond a mean of 0.56: the first check point x + d/3 or x + 2d/3 the model gets wrong is taken
    edge = Ramp(0.56)
    torch.manual_seed(0)
    checked = CheckedFGSM(edge, eps=eps, alpha=1.25 * eps, check_points=3)(x, y)
    torch.manual_seed(0)
    full = CheckedFGSM(edge, eps=eps, alpha=1.25 * eps, check_points=1)(x, y)  # c = 1: no check point
    wrong_earlier = (checked - full).flatten(1).abs().amax(1) > 1e-6
    assert wrong_earlier.any(), "some images train on an interior point"
    assert (edge(checked[wrong_earlier]).argmax(1) == 1).all(), "the point taken is misclassified"
    for i in wrong_earlier.nonzero().flatten():
        points = [x[i] + (k / 3) * (full[i] - x[i]) for k in (1, 2)]
        assert any(torch.allclose(checked[i], p, atol=1e-6) for p in points), "a check point x + (k/c) d"
    # already wrong at the random start (edge below every start): the clean image
    assert torch.equal(CheckedFGSM(Ramp(0.3), eps=eps, alpha=1.25 * eps, check_points=3)(x, y), x)
    with pytest.raises(ValueError, match="check_points"):
        CheckedFGSM(far, eps=0.1, alpha=0.1, check_points=0)
    with pytest.raises(ValueError, match="alpha"):
        CheckedFGSM(far, eps=0.1, alpha=0.0, check_points=3)


def test_checked_fgsm_is_built_on_the_defense_being_fine_tuned():
    entry = FINETUNE_ATTACKS["fgsm_checked"]
    assert entry.norm == "Linf"
    classifier, defense = Ramp(0.9), Ramp(0.56)
    built = entry.build(classifier, defense, {"eps": 0.2, "check_points": 4})
    assert isinstance(built, CheckedFGSM) and built.model is defense
    assert built.check_points == 4 and built.alpha == pytest.approx(1.25 * 0.2)
    assert entry.build(classifier, defense, {"eps": 0.2, "check_step": 1.0}).alpha == pytest.approx(0.2)


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
    assert any(
        line.startswith("- classifier adversarial: **CATASTROPHIC OVERFITTING** (train batch epoch 4)")
        for line in lines
    )
    assert any(line.startswith("- purifier finetune gan: neither detected (on 100 validation images") for line in lines)
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
