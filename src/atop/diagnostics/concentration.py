"""Gradient concentration of a randomized defense (GradDiv: Lee, Kim & Lee, TPAMI 2022).

For each image the defense is drawn repeatedly and the input gradient of the
cross-entropy loss taken per draw, g_1, g_2, ... With unit vectors u_i = g_i / ||g_i||,
the mean resultant length R = || (1/n) sum_i u_i || lies in [0, 1]: 1 when every draw
points the same way (a deterministic model), about 1 / sqrt(n) for directions drawn at
random. The mean pairwise cosine (n R^2 - 1) / (n - 1) carries the same information.

EOT sufficiency: the cosine between the mean gradient of k draws and that of an
independent reference of K draws, for k = 1, 2, 4, ..., K (the k draws are the first k
of a pool of K, so the curve costs 2K gradients per image). That measured curve is
capped by the reference's own noise (with scattered gradients it stays below 1 even at
k = K), so the EOT an attack needs is read from the expected cosine between a k-draw
mean and the expected gradient itself: with per-draw gradients g = mu + noise, the pool
estimates |mu|^2 without bias (its mean pairwise dot product) and the noise power s^2
(mean |g|^2 - |mu|^2), and a k-draw mean has expected cosine
sqrt(|mu|^2 / (|mu|^2 + s^2 / k)) to mu (the measured curve is this times its value at K).
The smallest k whose expected cosine, averaged over images, reaches the threshold is the
EOT an attack needs (k up to MAX_EOT, else None); an evaluation with fewer EOT samples
fails the check (``summary.eot_sufficiency_checks``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .settings import MAX_EOT


def expected_cosine(pool: torch.Tensor, ks: list[int]) -> torch.Tensor:
    """(len(ks), N): expected cosine between the mean of k draws and the expected gradient, from a (K, N, D) pool."""
    draws = pool.shape[0]
    if draws < 2:
        raise ValueError(f"draws = {draws}: the expected cosine needs at least 2 draws")
    pool = pool.double()
    squared = pool.pow(2).sum(dim=2)  # (K, N)
    total = pool.sum(dim=0)  # (N, D)
    signal = ((total.pow(2).sum(dim=1) - squared.sum(dim=0)) / (draws * (draws - 1))).clamp_min(0)
    noise = (squared.mean(dim=0) - signal).clamp_min(0)
    rows = [(signal / (signal + noise / k).clamp_min(1e-300)).sqrt() for k in ks]
    return torch.stack(rows).nan_to_num(0.0)


def sufficiency_grid(reference_draws: int) -> list[int]:
    """k = 1, 2, 4, ... below K, then K itself."""
    grid, k = [], 1
    while k < reference_draws:
        grid.append(k)
        k *= 2
    return [*grid, reference_draws]


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
    """R per image from (n, N, D) gradients; a zero gradient counts as a unit vector of no direction (it lowers R)."""
    if gradients.shape[0] < 2:
        raise ValueError(f"draws = {gradients.shape[0]}: the mean resultant length needs at least 2 draws")
    units = gradients / gradients.norm(dim=2, keepdim=True).clamp_min(1e-30)
    return units.mean(dim=0).norm(dim=1)


def _draw_mean(model: nn.Module, x: torch.Tensor, y: torch.Tensor, draws: int, chunk: int) -> torch.Tensor:
    """(N, D) mean gradient over ``draws`` draws, summed chunk by chunk (no (draws, N, D) tensor kept)."""
    total, remaining = None, draws
    while remaining > 0:
        k = min(chunk, remaining)
        part = per_draw_gradients(model, x, y, k, k).sum(dim=0)
        total = part if total is None else total + part
        remaining -= k
    return total / draws


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
    """R over ``draws`` draws and the EOT-sufficiency curve against ``reference_draws``, per image and averaged.

    Images go ``batch_size`` at a time: the pool of gradients is (K, batch, D).
    """
    if draws < 2:
        raise ValueError(f"draws = {draws}: the mean resultant length needs at least 2 draws")
    if reference_draws < draws:
        raise ValueError(f"reference_draws = {reference_draws} must be at least draws = {draws}")
    if not 0 < cosine <= 1:
        raise ValueError(f"cosine = {cosine} must lie in (0, 1]")
    grid = sufficiency_grid(reference_draws)
    resultant, norms, zeros, curves, expected = [], [], [], [], []
    expected_grid = sufficiency_grid(MAX_EOT)
    for start in range(0, len(y), batch_size):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        pool = per_draw_gradients(model, xb, yb, reference_draws, chunk)
        reference = _draw_mean(model, xb, yb, reference_draws, chunk)
        resultant.append(mean_resultant_length(pool[:draws]))
        pool_norms = pool.norm(dim=2)
        norms.append(pool_norms.mean(dim=0))
        zeros.append((pool_norms == 0).float().mean(dim=0))
        curves.append(torch.stack([F.cosine_similarity(pool[:k].mean(dim=0), reference, dim=1) for k in grid]))
        expected.append(expected_cosine(pool, expected_grid))
    r = torch.cat(resultant).double().cpu()
    curve = torch.cat(curves, dim=1).double().cpu()  # (len(grid), N)
    mean_curve = curve.mean(dim=1)
    expected_curve = torch.cat(expected, dim=1).cpu().mean(dim=1)
    reached = [k for k, value in zip(expected_grid, expected_curve.tolist(), strict=True) if value >= cosine]
    return {
        "draws": draws,
        "reference_draws": reference_draws,
        "n_images": len(y),
        "mean_resultant_length": r.mean().item(),
        "mean_resultant_length_per_image": r.tolist(),
        "mean_pairwise_cosine": ((draws * r.pow(2) - 1) / (draws - 1)).mean().item(),
        "zero_gradient_fraction": torch.cat(zeros).double().mean().item(),
        "gradient_norm": torch.cat(norms).double().mean().item(),
        "cosine_threshold": cosine,
        "sufficiency": {
            "k": grid,
            "cosine": mean_curve.tolist(),
            "cosine_min_over_images": curve.min(dim=1).values.tolist(),
            "expected_k": expected_grid,
            "expected_cosine": expected_curve.tolist(),
        },
        "eot_needed": reached[0] if reached else None,
    }
