"""What the overfitting monitors and the decision-boundary distortion add to the default experiment.

Side by side in one run, in CPU seconds (process time, all threads) and wall seconds:
- the AT baseline: one training epoch (its per-epoch validation PGD included, monitor off) vs one
  monitor call (clean / FGSM / PGD on the fixed train and val batches);
- AToP fine-tuning: one epoch (monitor off) vs one monitor call through RT + purifier + classifier;
- the distortion job's measurement on the fine-tuned-shaped defense (pre-trained weights here);
then the added cost of the default DAG: monitor calls x epochs + the distortion job.

    python benchmarks/monitors.py [--repeats 2] [--threads 2] [--smoke]

``--smoke`` (the test suite's): epochs of 64 training images, a 4-image, 4-point distortion.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # this checkout's code, not an installed copy
from atop.config import resolve_numbers
from atop.data import PreparedData
from atop.diagnostics.distortion import boundary_distortion
from atop.diagnostics.settings import distortion_settings, monitor_settings
from atop.evaluate import sample_indices
from atop.models import build_purifier
from atop.train.adversarial import train_adversarial
from atop.train.monitor import OverfittingMonitor
from atop.train.purifier import finetune_purifier

from fixtures import CONFIG, add_fixture_args, digits_defense

CPU = torch.device("cpu")
OFF = {"train_images": 0, "val_images": 0}


def timed(run) -> tuple[float, float, object]:
    cpu, wall = time.process_time(), time.perf_counter()
    out = run()
    return time.process_time() - cpu, time.perf_counter() - wall, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--smoke", action="store_true", help="tiny epochs and distortion: checks that it runs")
    add_fixture_args(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    data, classifier, defense = digits_defense(cache=args.cache)
    if args.smoke:
        tensors = {**data.tensors, "x_train": data.tensors["x_train"][:64], "y_train": data.tensors["y_train"][:64]}
        data = PreparedData(tensors=tensors, info=data.info)
    train, val = (data.images("train"), data.labels("train")), (data.images("val"), data.labels("val"))
    at_spec = resolve_numbers(CONFIG["adversarial_training"])
    ft_spec = resolve_numbers(CONFIG["finetune"])
    at_monitor = OverfittingMonitor(train, val, at_spec["eps"], monitor_settings(at_spec.get("monitor"), "at"))
    ft_monitor = OverfittingMonitor(train, val, ft_spec["eps"], monitor_settings(ft_spec.get("monitor"), "ft"))
    (variant,) = CONFIG["purifiers"].values()
    parts = build_purifier(arch=variant["arch"], in_channels=3, **variant["arch_params"])
    parts.generator.load_state_dict(defense.purifier.state_dict())
    model_meta = {"arch": variant["arch"], "in_channels": 3, "image_size": None, **variant["arch_params"]}
    transform_meta = {"name": variant["transform"], "params": variant["transform_params"]}
    rows: dict[str, list[tuple[float, float]]] = {}

    def record(name, run):
        cpu, wall, out = timed(run)
        rows.setdefault(name, []).append((cpu, wall))
        return out

    at_one = {**CONFIG["classifier"], "epochs": 1}
    at_off = {**CONFIG["adversarial_training"], "monitor": OFF}
    ft_one = {"purifier": variant, "finetune": {**ft_spec, "epochs": 1, "monitor": OFF, "check_draws": 1}}
    settings = distortion_settings(CONFIG["diagnostics"].get("distortion"))
    if args.smoke:
        settings |= {"n_images": 4, "points": 4}
    ev = CONFIG["evaluation"]
    idx = sample_indices(len(data.labels("test")), min(settings["n_images"], ev["n_samples"]), ev["sample_seed"])
    x_test, y_test = data.images("test")[idx], data.labels("test")[idx]
    eps = settings["eps"] if settings["eps"] is not None else ft_spec["eps"]
    resume = Path("/tmp/atop-bench-monitors.resume")

    def at_epoch():
        resume.unlink(missing_ok=True)  # a leftover resume file would skip the epoch
        return train_adversarial(data, at_one, at_off, 0, CPU, resume)

    def ft_epoch():
        resume.unlink(missing_ok=True)
        state = parts.as_module().state_dict()
        return finetune_purifier(data, ft_one, 0, CPU, classifier, state, model_meta, transform_meta, resume)

    for _ in range(args.repeats):
        record("AT epoch (monitor off)", at_epoch)
        record("AT monitor call", lambda: at_monitor(classifier))
        record("fine-tuning epoch (monitor off)", ft_epoch)
        record("fine-tuning monitor call", lambda: ft_monitor(defense))
        record(
            "distortion job (measurement)",
            lambda: boundary_distortion(defense, x_test, y_test, eps, settings["points"], settings["draws"]),
        )
    resume.unlink(missing_ok=True)

    print(f"threads: {args.threads}  repeats: {args.repeats}  (median CPU s / wall s)")
    median = {
        name: (statistics.median(c for c, _ in v), statistics.median(w for _, w in v)) for name, v in rows.items()
    }
    for name, (cpu, wall) in median.items():
        print(f"  {name:<34} {cpu:8.2f} CPU s {wall:8.2f} s")
    at_epochs, ft_epochs = CONFIG["classifier"]["epochs"], ft_spec["epochs"]
    added = (
        at_epochs * median["AT monitor call"][0]
        + ft_epochs * median["fine-tuning monitor call"][0]
        + median["distortion job (measurement)"][0]
    )
    print(
        f"  monitors: AT {at_epochs} x {median['AT monitor call'][0]:.2f} "
        f"({100 * median['AT monitor call'][0] / median['AT epoch (monitor off)'][0]:.0f} % of an epoch), "
        f"fine-tuning {ft_epochs} x {median['fine-tuning monitor call'][0]:.2f} "
        f"({100 * median['fine-tuning monitor call'][0] / median['fine-tuning epoch (monitor off)'][0]:.0f} % of an epoch)"
    )
    print(f"  added to the default DAG: {added:.1f} CPU s (~{added / args.threads:.1f} s on {args.threads} cores)")


if __name__ == "__main__":
    main()
