"""The ``diagnostics:`` config section, checked before any job runs. Torch-free (the Snakefile imports it)."""

from __future__ import annotations

from ..attack_catalog import PARTIAL_GRADIENT_METHODS
from ..config import ConfigError, number
from .catalog import PER_DEFENSE

# The diagnostics attack must follow the full gradient through the defense (the pictures show "the
# full-gradient adversarial example"): not one of PARTIAL_GRADIENT_METHODS (src/atop/attack_catalog.py).
__all__ = ["PARTIAL_GRADIENT_METHODS", "check_diagnostics"]


def check_diagnostics(config: dict) -> None:
    """Raise :class:`ConfigError` naming the key for settings the diagnostics cannot run with."""
    section = config.get("diagnostics", {})
    attacks = config["evaluation"]["attacks"]
    name = section.get("attack", "eot_pgd")
    if name not in attacks:
        raise ConfigError(f"diagnostics.attack = {name!r} is not in evaluation.attacks ({', '.join(attacks)})")
    if attacks[name]["method"] in PARTIAL_GRADIENT_METHODS:
        raise ConfigError(
            f"diagnostics.attack = {name!r} is {attacks[name]['method']}, which does not follow the full gradient "
            "through the defense; name a full-gradient attack (e.g. eot_pgd or pgd_linf)"
        )
    concentration = section.get("gradient_concentration", {})
    check_concentration(
        concentration.get("draws", 16), concentration.get("reference_draws", 64), concentration.get("cosine", 0.9)
    )
    measures = section.get("measures", {})
    check_flatness(measures.get("flatness_xi", 0.5), measures.get("flatness_draws", 10))
    check_overfitting_settings(config)
    n_samples = config["evaluation"].get("n_samples")
    for diagnostic in PER_DEFENSE:
        n = (section.get(diagnostic.section) or {}).get("n_images")
        if n is not None and n_samples is not None and n > n_samples:
            raise ConfigError(
                f"diagnostics.{diagnostic.section}.n_images = {n} exceeds evaluation.n_samples = {n_samples}: "
                "the diagnostics take the first images of the evaluation's fixed subset"
            )
    n_test = config["data"].get("test_size")
    n_samples = min(config["evaluation"].get("n_samples", 200), n_test or float("inf"))
    for position in section.get("pictures", {}).get("images", []):
        if not 0 <= position < n_samples:
            raise ConfigError(
                f"diagnostics.pictures.images: {position} is not a position in the evaluation's "
                f"{n_samples} fixed test images"
            )


def check_concentration(draws: int, reference_draws: int, cosine: float, prefix: str = "diagnostics.") -> None:
    key = f"{prefix}gradient_concentration"
    if not isinstance(draws, int) or draws < 2:
        raise ConfigError(f"{key}.draws = {draws!r}: the mean resultant length needs at least 2 draws")
    if not isinstance(reference_draws, int) or reference_draws < draws:
        raise ConfigError(
            f"{key}.reference_draws = {reference_draws!r} must be an integer of at least draws = {draws} "
            "(the draws are the first of the reference-sized pool)"
        )
    if not 0 < cosine <= 1:
        raise ConfigError(f"{key}.cosine = {cosine!r} must lie in (0, 1]")


def check_flatness(xi: float, draws: int, prefix: str = "diagnostics.") -> None:
    key = f"{prefix}measures"
    if not xi >= 0:
        raise ConfigError(f"{key}.flatness_xi = {xi!r}: a relative weight-perturbation radius cannot be negative")
    if not isinstance(draws, int) or draws < 1:
        raise ConfigError(f"{key}.flatness_draws = {draws!r} must be a positive integer")


# Overfitting monitors (src/atop/train/monitor.py): a ``monitor:`` section in each adversarial
# training stage (adversarial_training, finetune). 0 images switch a batch off; both 0 switch the
# monitor off. eps is the stage's training eps; PGD steps are 2.5 eps / steps from a random start.
MONITOR_DEFAULTS = {"train_images": 64, "val_images": 64, "steps": 5, "eot": 2, "seed": 0}
# The detectors on the monitored curves: minimum changes (fractions, not percentage points) and the
# false-alarm rate of each detector on one stage's curve (detectors.py).
OVERFITTING_DEFAULTS = {"fgsm_rise": 0.1, "pgd_drop": 0.2, "robust_drop": 0.05, "train_rise": 0.0, "alpha": 0.05}
# Decision-boundary distortion (Kim, Lee & Lee, AAAI 2021); eps null: the fine-tuning attack's eps.
DISTORTION_DEFAULTS = {"n_images": 32, "points": 100, "eps": None, "draws": 2}


def monitor_settings(section: dict | None, key: str) -> dict:
    """The stage's monitor settings with defaults; :class:`ConfigError` naming ``key`` for bad ones."""
    settings = {**MONITOR_DEFAULTS, **(section or {})}
    unknown = sorted(set(settings) - set(MONITOR_DEFAULTS))
    if unknown:
        raise ConfigError(f"{key}: unknown keys {unknown}; known: {sorted(MONITOR_DEFAULTS)}")
    for name in ("train_images", "val_images"):
        if not isinstance(settings[name], int) or settings[name] < 0:
            raise ConfigError(f"{key}.{name} = {settings[name]!r} must be an integer >= 0 (0: no such batch)")
    for name in ("steps", "eot"):
        if not isinstance(settings[name], int) or settings[name] < 1:
            raise ConfigError(f"{key}.{name} = {settings[name]!r} must be a positive integer")
    if not isinstance(settings["seed"], int) or settings["seed"] < 0:
        raise ConfigError(f"{key}.seed = {settings['seed']!r} must be a non-negative integer")
    return settings


def overfitting_thresholds(section: dict | None, key: str = "diagnostics.overfitting") -> dict:
    thresholds = {**OVERFITTING_DEFAULTS, **(section or {})}
    unknown = sorted(set(thresholds) - set(OVERFITTING_DEFAULTS))
    if unknown:
        raise ConfigError(f"{key}: unknown keys {unknown}; known: {sorted(OVERFITTING_DEFAULTS)}")
    for name, value in thresholds.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            raise ConfigError(f"{key}.{name} = {value!r} must be an accuracy change in [0, 1]")
    for name in ("fgsm_rise", "pgd_drop", "robust_drop"):
        if thresholds[name] == 0:
            raise ConfigError(f"{key}.{name} = 0 would flag every curve; use a positive change")
    if not 0 < thresholds["alpha"] < 1:
        raise ConfigError(f"{key}.alpha = {thresholds['alpha']!r} must be a false-alarm rate in (0, 1)")
    return thresholds


def check_distortion(points: int, eps: float | None, draws: int, n_images: int, key: str = "diagnostics.distortion"):
    if isinstance(points, bool) or not isinstance(points, int) or points < 2:
        raise ConfigError(
            f"{key}.points = {points!r}: the segment needs at least 2 points (one between clean and full step)"
        )
    if eps is not None and (isinstance(eps, bool) or not isinstance(eps, int | float) or not eps >= 0):
        raise ConfigError(f"{key}.eps = {eps!r}: the FGSM step size cannot be negative")
    if isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
        raise ConfigError(f"{key}.draws = {draws!r} must be a positive integer")
    if isinstance(n_images, bool) or not isinstance(n_images, int) or n_images < 1:
        raise ConfigError(f"{key}.n_images = {n_images!r} must be a positive integer")


def distortion_settings(section: dict | None, key: str = "diagnostics.distortion") -> dict:
    settings = {**DISTORTION_DEFAULTS, **(section or {})}
    unknown = sorted(set(settings) - set(DISTORTION_DEFAULTS))
    if unknown:
        raise ConfigError(f"{key}: unknown keys {unknown}; known: {sorted(DISTORTION_DEFAULTS)}")
    check_distortion(settings["points"], settings["eps"], settings["draws"], settings["n_images"], key)
    return settings


def check_overfitting_settings(config: dict) -> None:
    """The monitors of both adversarial training stages, the detectors' thresholds, the distortion measure."""
    for stage in ("adversarial_training", "finetune"):
        if config.get(stage) is not None:
            monitor_settings(config[stage].get("monitor"), f"{stage}.monitor")
    section = config.get("diagnostics", {})
    overfitting_thresholds(section.get("overfitting"))
    distortion = dict(section.get("distortion") or {})
    if distortion.get("eps") is not None:
        distortion["eps"] = number(distortion["eps"])  # "8/255" as in every budget
    distortion_settings(distortion)
