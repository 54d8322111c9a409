"""Batched EOT-PGD (atop.attacks.BatchedEOTPGD) vs torchattacks' sequential EOTPGD, side by side.

On the default digits defense (RT2 + 16-channel gan_unet + small_cnn, briefly
trained: see fixtures.py) at EOT 20, same images, same PGD settings:
- speed: wall time of whole attacks, contenders interleaved ``--repeats`` times,
  ratios per repeat (median and range), target >= 3x on the CPU;
- gradient quality: cosine similarity of each estimator's EOT-20 gradient to a
  high-sample reference (``--reference-draws`` draws), per image, over
  ``--trials`` independent estimates - equal quality means equal cosines;
- why: images/s of one forward + backward pass by images per pass, the only
  thing batching the replicas changes.

    python benchmarks/eot.py [--images 64] [--steps 2] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time
from functools import partial

import torch
import torch.nn.functional as F
import torchattacks

from atop.attacks import BatchedEOTPGD
from atop.attacks.eot import DEFAULT_MAX_BATCH

from fixtures import add_fixture_args, digits_defense, interleaved, ratio_summary

EOT = 20


def sequential_eot_gradient(model, x: torch.Tensor, y: torch.Tensor, eot: int) -> torch.Tensor:
    """One step's gradient exactly as torchattacks.EOTPGD computes it: ``eot`` separate passes, summed."""
    x = x.detach().requires_grad_(True)
    grad = torch.zeros_like(x)
    for _ in range(eot):
        grad += torch.autograd.grad(F.cross_entropy(model(x), y), x)[0]
    return grad


def per_image_cosine(estimate: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    return F.cosine_similarity(estimate.flatten(1), reference.flatten(1), dim=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--steps", type=int, default=2, help="PGD steps per timed attack")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--trials", type=int, default=5, help="independent EOT-20 estimates for gradient quality")
    parser.add_argument("--reference-draws", type=int, default=400)
    parser.add_argument("--pass-sizes", type=int, nargs="+", default=[16, 64, 128, 256, 512, 1280])
    parser.add_argument("--seconds-per-size", type=float, default=3.0)
    add_fixture_args(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data, _, defense = digits_defense(cache=args.cache)
    x, y = data.images("test")[: args.images], data.labels("test")[: args.images]
    eps, alpha = 24 / 255, 6 / 255  # the default experiment's eot_pgd budget
    n = len(y)
    print(
        f"defense: RT2 + gan_unet(16) + small_cnn  images: {n}  EOT: {EOT}  steps: {args.steps}  "
        f"threads: {args.threads}"
    )

    chunks = {
        f"batched, CPU default ({DEFAULT_MAX_BATCH['cpu']} images per pass)": None,
        f"batched, GPU default (all {EOT} replicas: {EOT * n} per pass)": DEFAULT_MAX_BATCH["cuda"],
    }

    def batched_eot(max_batch):
        return BatchedEOTPGD(defense, eps=eps, alpha=alpha, steps=args.steps, eot_iter=EOT, max_batch=max_batch)(x, y)

    contenders = {
        "torchattacks EOTPGD": lambda: torchattacks.EOTPGD(
            defense, eps=eps, alpha=alpha, steps=args.steps, eot_iter=EOT
        )(x, y)
    }
    for label, max_batch in chunks.items():
        contenders[label] = partial(batched_eot, max_batch)
    times = interleaved(contenders, args.repeats)
    baseline = times["torchattacks EOTPGD"]
    print(f"\n{'attack':<58}{'median s':>10}{'img/s':>8}{'speed-up vs EOTPGD (median [min, max])':>42}")
    for label, seconds in times.items():
        median, low, high = ratio_summary(baseline, seconds)
        print(
            f"{label:<58}{statistics.median(seconds):>10.2f}{n / statistics.median(seconds):>8.1f}"
            f"{f'{median:.2f}x [{low:.2f}, {high:.2f}]':>42}"
        )

    speedup = ratio_summary(baseline, times[next(iter(chunks))])[0]
    print(f"target >= 3x on the CPU: {'met' if speedup >= 3 else 'NOT met'} ({speedup:.2f}x with the CPU default)")

    # Why: images/s of one forward + backward pass by pass size. Batching EOT replicas only
    # changes the pass size; on a CPU the cost per image is flat, then rises out of cache.
    print(f"\n{'images per pass':<20}{'img/s (fwd + bwd)':>20}")
    for size in args.pass_sizes:
        xb, yb = x.repeat((size + n - 1) // n, 1, 1, 1)[:size], y.repeat((size + n - 1) // n)[:size]
        began, done = time.perf_counter(), 0
        while time.perf_counter() - began < args.seconds_per_size:
            xg = xb.clone().requires_grad_(True)
            torch.autograd.grad(F.cross_entropy(defense(xg), yb, reduction="sum"), xg)
            done += size
        print(f"{size:<20}{done / (time.perf_counter() - began):>20.1f}")

    # Gradient quality at a fixed point: the clean images, fixed labels.
    reference = BatchedEOTPGD(defense, eot_iter=args.reference_draws, max_batch=4096).eot_gradient(x, y)
    batched = BatchedEOTPGD(defense, eot_iter=EOT)
    cosines: dict[str, list[float]] = {"torchattacks EOTPGD": [], "batched": []}
    for trial in range(args.trials):
        defense.reseed(1000 + trial)
        cosines["torchattacks EOTPGD"].append(
            per_image_cosine(sequential_eot_gradient(defense, x, y, EOT), reference).mean().item()
        )
        defense.reseed(2000 + trial)
        cosines["batched"].append(per_image_cosine(batched.eot_gradient(x, y), reference).mean().item())
    print(
        f"\ngradient quality: mean per-image cosine of the EOT-{EOT} gradient to a {args.reference_draws}-draw "
        f"reference, {args.trials} trials"
    )
    for label, values in cosines.items():
        print(f"{label:<58}median {statistics.median(values):.4f}  range [{min(values):.4f}, {max(values):.4f}]")


if __name__ == "__main__":
    main()
