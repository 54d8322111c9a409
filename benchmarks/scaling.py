"""How evaluation time scales with the number of samples and with EOT samples.

Full-gradient EOT-PGD (the default experiment's ``eot_pgd`` budget, fewer steps)
through the default digits defense (RT2 + 16-channel gan_unet + small_cnn,
briefly trained: see fixtures.py), timed with the evaluation harness's own
attack timing (``attack_seconds`` of atop.evaluate.evaluate_defense). Both
should be linear: the script fits ``seconds = slope * x + intercept`` by least
squares and prints slope, intercept and R^2. Points are measured in a shuffled
order, each ``--repeats`` times, and the median is fitted.

    python benchmarks/scaling.py [--samples 25 50 100 200] [--eot 1 2 4 8]
"""

from __future__ import annotations

import argparse
import logging
import random
import statistics

import torch

from atop.config import resolve_numbers
from atop.evaluate import evaluate_defense

from fixtures import CONFIG, add_fixture_args, digits_defense, linear_fit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, nargs="+", default=[25, 50, 100, 200])
    parser.add_argument("--eot", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--fixed-samples", type=int, default=50, help="images while EOT varies")
    parser.add_argument("--fixed-eot", type=int, default=2, help="EOT samples while the image count varies")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    add_fixture_args(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    data, _, defense = digits_defense(cache=args.cache)
    base = {**resolve_numbers(CONFIG["evaluation"]["attacks"]["eot_pgd"]), "steps": args.steps}
    # Checks off: they run fixed-size extra attacks that would blur the scaling.
    spec = {**CONFIG["evaluation"], "checks": {**CONFIG["evaluation"]["checks"], "eps_zero_samples": 0}}

    points = [("samples", v) for v in args.samples] + [("eot", v) for v in args.eot]
    seconds: dict[tuple[str, int], list[float]] = {p: [] for p in points}
    order = points * args.repeats
    random.Random(0).shuffle(order)
    for axis, value in order:
        n = value if axis == "samples" else args.fixed_samples
        eot = value if axis == "eot" else args.fixed_eot
        result = evaluate_defense(
            defense, "atop", "eot_pgd", {**base, "eot": eot}, data, {**spec, "n_samples": n}, seed=0
        )
        seconds[(axis, value)].append(result["attack_seconds"])

    print(
        f"EOT-PGD, {args.steps} steps, through RT2 + gan_unet(16) + small_cnn, threads: {args.threads}, "
        f"median of {args.repeats}"
    )
    for axis, fixed in [("samples", f"EOT {args.fixed_eot}"), ("eot", f"{args.fixed_samples} images")]:
        xs = [v for a, v in points if a == axis]
        ys = [statistics.median(seconds[(axis, v)]) for v in xs]
        print(f"\n{axis:>8} ({fixed}): " + "  ".join(f"{x}: {y:.2f} s" for x, y in zip(xs, ys)))
        slope, intercept, r2 = linear_fit(xs, ys)
        unit = "image" if axis == "samples" else "EOT sample"
        print(f"fit: {slope:.4f} s per {unit}, intercept {intercept:.2f} s, R^2 {r2:.4f}")


if __name__ == "__main__":
    main()
