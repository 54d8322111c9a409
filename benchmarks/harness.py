"""The evaluation harness (atop.evaluate.evaluate_defense) vs a plain torchattacks loop, side by side.

Same defended model (RT2 + 16-channel gan_unet + small_cnn, briefly trained:
see fixtures.py), same attack (torchattacks.PGD with the default experiment's
``pgd`` settings), same samples and batch size. The harness also scores clean
and adversarial accuracy over several draws and runs the obfuscation checks,
so two ratios are printed, each from interleaved repeats (median and range):
- attack phase like for like: the harness's own attack timing
  (``attack_seconds``: the batched loop with its progress bar) vs the plain
  loop; target images/s ours / theirs >= 0.95;
- whole harness: everything ``evaluate_defense`` does vs the plain attack loop
  alone - what the extra scoring and checks cost, not an overhead of the loop.

    python benchmarks/harness.py [--images 200] [--repeats 3]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time

import torch
import torchattacks

from atop.config import resolve_numbers
from atop.evaluate import evaluate_defense, evaluation_batch_size, sample_indices

from fixtures import CONFIG, add_fixture_args, digits_defense, ratio_summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=CONFIG["evaluation"]["n_samples"])
    parser.add_argument("--repeats", type=int, default=3)
    add_fixture_args(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    data, _, defense = digits_defense(cache=args.cache)
    spec = {**CONFIG["evaluation"], "n_samples": args.images}
    attack_spec = resolve_numbers(CONFIG["evaluation"]["attacks"]["pgd"])
    params = {k: v for k, v in attack_spec.items() if k != "method"}
    idx = sample_indices(len(data.labels("test")), spec["n_samples"], spec["sample_seed"])
    x, y = data.images("test")[idx], data.labels("test")[idx]
    n, batch = len(y), evaluation_batch_size(spec["batch_size"], torch.device("cpu"))  # "auto" as a job sees it
    print(
        f"defense: RT2 + gan_unet(16) + small_cnn  attack: torchattacks.PGD {params}  images: {n}  "
        f"batch: {batch}  draws: {spec['draws']}  threads: {args.threads}"
    )

    def plain_loop() -> float:
        torch.manual_seed(0)
        attack = torchattacks.PGD(defense, **params)
        began = time.perf_counter()
        for start in range(0, n, batch):
            attack(x[start : start + batch], y[start : start + batch])
        return time.perf_counter() - began

    def harness() -> tuple[float, float]:
        began = time.perf_counter()
        result = evaluate_defense(defense, "atop", "pgd", attack_spec, data, spec, seed=0)
        return result["attack_seconds"], time.perf_counter() - began

    plain, attack_phase, whole = [], [], []
    for _ in range(args.repeats):  # interleaved so load drifts hit both alike
        plain.append(plain_loop())
        attack_seconds, wall = harness()
        attack_phase.append(attack_seconds)
        whole.append(wall)

    print(f"\n{'':<44}{'median s':>10}{'img/s':>8}")
    for label, seconds in [
        ("plain torchattacks loop (attack only)", plain),
        ("harness: attack phase", attack_phase),
        ("harness: whole evaluate_defense", whole),
    ]:
        print(f"{label:<44}{statistics.median(seconds):>10.2f}{n / statistics.median(seconds):>8.1f}")
    median, low, high = ratio_summary(plain, attack_phase)
    print(f"\nattack phase, images/s ours / theirs: {median:.3f} [{low:.3f}, {high:.3f}]  (target >= 0.95)")
    median, low, high = ratio_summary(plain, whole)
    print(
        f"whole harness (clean + robust scoring over {spec['draws']} draws, obfuscation checks) vs plain attack "
        f"loop, images/s ours / theirs: {median:.3f} [{low:.3f}, {high:.3f}]"
    )


if __name__ == "__main__":
    main()
