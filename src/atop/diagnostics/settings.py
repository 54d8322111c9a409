"""The ``diagnostics:`` config section, checked before any job runs. Torch-free (the Snakefile imports it)."""

from __future__ import annotations

from ..config import ConfigError

MAX_EOT = 1024  # the largest EOT the expected-cosine curve of gradient concentration is read up to

# Attacks whose gradient runs through the whole defense: the pictures show "the full-gradient
# adversarial example", so the diagnostics attack must be one (tests keep this in step with the registry).
PARTIAL_GRADIENT_METHODS = frozenset({"bpda_eot", "cw_classifier", "pgd_classifier", "square"})


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
