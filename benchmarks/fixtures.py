"""Models and data the benchmarks share, built in seconds without running the workflow.

The digits defense of the default experiment: RT2 + the 16-channel ``gan_unet``
purifier + ``small_cnn``, with the default config's data split. The classifier
is trained for a couple of epochs and the purifier pre-trained for one (enough
for meaningful gradients and accuracies; speed does not depend on the weights).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))  # benchmark this checkout's code, not an installed copy

from atop.data import load_prepared, prepare_dataset
from atop.defense import DefendedModel
from atop.io import atomic_path
from atop.models import build_classifier, build_purifier
from atop.train.classifier import classifier_meta, train_classifier
from atop.train.purifier import pretrain_purifier
from atop.transforms import build_transform


def default_config() -> dict:
    """config/config.yaml with the schema's defaults filled in, as the Snakefile sees it."""
    from snakemake.utils import validate

    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    validate(config, str(REPO / "config" / "schema.yaml"), set_default=True)
    return config


CONFIG = default_config()


def digits_defense(classifier_epochs: int = 2, purifier_epochs: int = 1, seed: int = 0, cache: Path | None = None):
    """``(data, classifier, defense)``: the default digits defense, briefly trained on CPU.

    With ``cache`` (a folder) the trained weights are kept there and reused by
    later runs with the same settings, so a benchmark starts in seconds.
    """
    device = torch.device("cpu")
    folder = Path(cache) if cache else Path(tempfile.mkdtemp(prefix="atop-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    tag = f"c{classifier_epochs}-p{purifier_epochs}-s{seed}"
    data_path, weights_path = folder / "digits.pt", folder / f"weights-{tag}.pt"
    if not data_path.is_file():
        prepare_dataset(CONFIG["data"], data_path)
    data = load_prepared(data_path)
    (variant,) = CONFIG["purifiers"].values()  # the default has one purifier variant
    purifier_spec = {**variant, "pretrain": {**variant["pretrain"], "epochs": purifier_epochs}}
    transform = build_transform(purifier_spec["transform"], seed=seed, **purifier_spec["transform_params"])
    classifier = build_classifier(**classifier_meta(data, CONFIG["classifier"]))
    parts = build_purifier(
        arch=purifier_spec["arch"], in_channels=data.info["image_shape"][0], **purifier_spec["arch_params"]
    )
    if weights_path.is_file():
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
        classifier.load_state_dict(state["classifier"])
        parts.generator.load_state_dict(state["generator"])
    else:
        classifier_spec = {**CONFIG["classifier"], "epochs": classifier_epochs}
        trained, _, _ = train_classifier(data, classifier_spec, seed, device, folder / f"classifier-{tag}.resume")
        modules, _, _, _ = pretrain_purifier(data, purifier_spec, seed, device, folder / f"purifier-{tag}.resume")
        classifier.load_state_dict(trained.state_dict())
        parts.generator.load_state_dict(modules["generator"].state_dict())
        state = {"classifier": classifier.state_dict(), "generator": parts.generator.state_dict()}
        with atomic_path(weights_path) as tmp:
            torch.save(state, tmp)
    classifier = classifier.eval().requires_grad_(False)
    generator = parts.generator.eval().requires_grad_(False)
    return data, classifier, DefendedModel(classifier, generator, transform).eval()


def add_fixture_args(parser) -> None:
    """The options every digits-defense benchmark shares: torch threads and the weights cache."""
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--cache", default="/tmp/atop-bench-cache", help="folder that keeps the trained weights")


def interleaved(contenders: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """Wall seconds of each contender, run in turn ``repeats`` times so load drifts hit all alike."""
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, run in contenders.items():
            began = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - began)
    return times


def ratio_summary(numerator: list[float], denominator: list[float]) -> tuple[float, float, float]:
    """Median, min and max of the per-repeat ratios ``numerator[i] / denominator[i]``."""
    ratios = [a / b for a, b in zip(numerator, denominator)]
    return statistics.median(ratios), min(ratios), max(ratios)


def linear_fit(xs: list[float], ys: list[float]) -> tuple[float, float, float]:
    """Least-squares ``y = slope * x + intercept``; return ``(slope, intercept, r_squared)``."""
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mean_x) ** 2 for x in xs)
    sxy = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys))
    slope = sxy / sxx
    intercept = mean_y - slope * mean_x
    total = sum((y - mean_y) ** 2 for y in ys)
    residual = sum((y - slope * x - intercept) ** 2 for x, y in zip(xs, ys))
    return slope, intercept, 1 - residual / total if total > 0 else 1.0
