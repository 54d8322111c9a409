"""Gradient concentration of a randomized defense (GradDiv: Lee, Kim & Lee, TPAMI 2022).

For each image the defense is drawn repeatedly and the input gradient of the
cross-entropy loss taken per draw, g_1, g_2, ... With unit vectors u_i = g_i / ||g_i||,
the mean resultant length R = || (1/n) sum_i u_i || lies in [0, 1]: 1 when every draw
points the same way (a deterministic model), about 1 / sqrt(n) for directions drawn at
random. The mean pairwise cosine (n R^2 - 1) / (n - 1) carries the same information.

EOT need, measured (not extrapolated): from a pool of K draws per image, the cosine
between the means of two disjoint sets of k draws, averaged over the K // (2k) disjoint
pairs, for k = 1, 2, 4, ... up to K / 2. Two independent k-draw means A and B of
gradients mu + noise have cos(A, B) ~ cos(A, mu)^2, so sqrt(cos(A, B)) estimates the
cosine of a k-draw mean to the expected gradient, whatever the sizes of the draws'
gradients (predicting it from averaged raw gradients, sqrt(S / (S + N / k)), assumes
equal sizes: behind a random mask one draw can carry most of the squared norm, and the
prediction then depends on the pool). The curve is summarised by its median over images
(robust to a few images with huge gradients); the EOT needed is the smallest k whose
median reaches the threshold, or None: "more than K / 2", the most the pool can show.
Images whose every draw has a zero gradient have no direction to concentrate: R = 1 and
no cosine. This explains; the EOT-sufficiency check decides on accuracy
(``summary.eot_sufficiency_checks``: raising EOT must not lower robust accuracy).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def disjoint_cosine(pool: torch.Tensor, ks: list[int]) -> torch.Tensor:
    """(len(ks), N): sqrt of the mean cosine between disjoint k-draw means of a (K, N, D) pool, per image.

    NaN where an image's gradients are all zero (no direction) or k > K / 2.
    """
    draws = pool.shape[0]
    if draws < 2:
        raise ValueError(f"draws = {draws}: disjoint k-draw means need at least 2 draws")
    pool = pool.double()
    rows = []
    for k in ks:
        pairs = draws // (2 * k)
        if pairs < 1:
            rows.append(torch.full(pool.shape[1:2], float("nan"), dtype=torch.float64))
            continue
        blocks = pool[: 2 * k * pairs].view(pairs, 2, k, *pool.shape[1:]).mean(dim=2)  # (pairs, 2, N, D)
        cosines = F.cosine_similarity(blocks[:, 0], blocks[:, 1], dim=2, eps=1e-300)  # (pairs, N)
        rows.append(cosines.mean(dim=0).clamp_min(0).sqrt())
    curve = torch.stack(rows)
    silent = pool.abs().sum(dim=(0, 2)) == 0  # every draw's gradient is exactly zero
    curve[:, silent] = float("nan")
    return curve


def sufficiency_grid(reference_draws: int) -> list[int]:
    """k = 1, 2, 4, ... up to K / 2 (the most two disjoint sets of a K-draw pool can show)."""
    grid, k = [], 1
    while 2 * k <= reference_draws:
        grid.append(k)
        k *= 2
    return grid


def per_draw_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor, draws: int, chunk: int) -> torch.Tensor:
    """(draws, N, D): one input gradient of the loss per draw of the model, replicas batched ``chunk`` at a time."""
    device = next(model.parameters()).device
    x, y = x.to(device), y.to(device)
    out = []
    remaining = draws
    while remaining > 0:
        k = min(chunk, remaining)
        # the replicated batch is the leaf, so each replica (its own draw) gets its own gradient
        replicas = x.repeat(k, 1, 1, 1).requires_grad_(True)
        loss = F.cross_entropy(model(replicas), y.repeat(k), reduction="sum")
        (grad,) = torch.autograd.grad(loss, replicas)
        out.append(grad.detach().view(k, len(x), -1))
        remaining -= k
    return torch.cat(out)


def mean_resultant_length(gradients: torch.Tensor) -> torch.Tensor:
    """R per image from (n, N, D) gradients. A zero gradient among non-zero ones counts as a unit vector
    of no direction (it lowers R); an image whose every draw is zero has no spread at all: R = 1."""
    if gradients.shape[0] < 2:
        raise ValueError(f"draws = {gradients.shape[0]}: the mean resultant length needs at least 2 draws")
    norms = gradients.norm(dim=2, keepdim=True)
    units = gradients / norms.clamp_min(1e-30)
    r = units.mean(dim=0).norm(dim=1)
    silent = (norms.squeeze(2) == 0).all(dim=0)
    return torch.where(silent, torch.ones_like(r), r)


def gradient_concentration(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    draws: int = 16,
    reference_draws: int = 64,
    cosine: float = 0.9,
    chunk: int = 16,
    batch_size: int = 32,
) -> dict:
    """R over ``draws`` draws, and the measured EOT curve from a pool of ``reference_draws`` draws, per image.

    Images go ``batch_size`` at a time: the pool of gradients is (K, batch, D).
    """
    if draws < 2:
        raise ValueError(f"draws = {draws}: the mean resultant length needs at least 2 draws")
    if reference_draws < draws:
        raise ValueError(f"reference_draws = {reference_draws} must be at least draws = {draws}")
    if not 0 < cosine <= 1:
        raise ValueError(f"cosine = {cosine} must lie in (0, 1]")
    grid = sufficiency_grid(reference_draws)
    resultant, norms, zeros, curves = [], [], [], []
    for start in range(0, len(y), batch_size):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        pool = per_draw_gradients(model, xb, yb, reference_draws, chunk)
        resultant.append(mean_resultant_length(pool[:draws]))
        pool_norms = pool.norm(dim=2)
        norms.append(pool_norms.mean(dim=0))
        zeros.append((pool_norms == 0).float().mean(dim=0))
        curves.append(disjoint_cosine(pool, grid))
    r = torch.cat(resultant).double().cpu()
    curve = torch.cat(curves, dim=1).double().cpu()  # (len(grid), N), NaN: no gradient at all
    directed = ~curve[0].isnan()
    median = curve[:, directed].median(dim=1).values if directed.any() else torch.ones(len(grid), dtype=torch.float64)
    reached = [k for k, value in zip(grid, median.tolist(), strict=True) if value >= cosine]
    return {
        "draws": draws,
        "reference_draws": reference_draws,
        "n_images": len(y),
        "mean_resultant_length": r.mean().item(),
        "mean_resultant_length_per_image": r.tolist(),
        "mean_pairwise_cosine": ((draws * r.pow(2) - 1) / (draws - 1)).clamp(max=1).mean().item(),
        "zero_gradient_fraction": torch.cat(zeros).double().mean().item(),
        "gradient_norm": torch.cat(norms).double().mean().item(),
        "cosine_threshold": cosine,
        "sufficiency": {
            "k": grid,
            # sqrt of the cosine between disjoint k-draw means: the k-draw mean's cosine to the expected gradient
            "cosine": median.tolist(),
            "cosine_mean": curve[:, directed].mean(dim=1).tolist() if directed.any() else [1.0] * len(grid),
            "images_with_gradient": int(directed.sum()),
        },
        "eot_needed": reached[0] if reached else None,
        "eot_needed_above": None if reached else grid[-1],  # None means "more than this": all the pool can show
    }
