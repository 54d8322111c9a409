"""Decision-boundary distortion (Kim, Lee & Lee 2021, Sec. 4): among images classified correctly both
clean and at the full FGSM step x_f = clip(x + eps sign(g), 0, 1), the fraction whose prediction is
wrong at some interior point x + (k/m)(x_f - x), k = 1..m-1 (g: the input gradient of the CE loss).
An exactly linear model has none: the region of one class is convex. A randomized defense is measured ``draws`` times,
each draw with one RT randomness shared by the gradient and every point of the segment (else RT noise
alone would change labels); the figure is pooled over draws (distorted images / eligible images).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .rng import preserved_rng, reseed
from .settings import check_distortion


def boundary_distortion(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, points: int = 100, draws: int = 1, seed: int = 0
) -> dict:
    """Kim, Lee & Lee's decision-boundary distortion of ``model`` at FGSM step ``eps`` (see module doc).

    ``draws`` > 1 only for randomized models (``model.randomized``); each draw reseeds the model
    before every pass, so all points of a segment see the same RT randomness.
    """
    check_distortion(points, eps, draws, max(len(y), 1), key="boundary_distortion")
    if not getattr(model, "randomized", False):
        draws = 1
    device = next(model.parameters()).device
    model.eval()
    x, y = x.to(device), y.to(device)
    eligible_total = distorted_total = 0
    per_draw = []
    with preserved_rng(model):
        for draw in range(draws):
            draw_seed = seed + draw

            def logits(images: torch.Tensor, draw_seed: int = draw_seed) -> torch.Tensor:
                reseed(model, draw_seed)  # one randomness for the gradient and every point
                return model(images)

            images = x.clone().requires_grad_(True)
            loss = F.cross_entropy(logits(images), y, reduction="sum")
            (grad,) = torch.autograd.grad(loss, images)
            # the full step kept in [0, 1], so the segment x -> x_fgsm is straight and inside the image box
            step = (x + eps * grad.sign()).clamp(0, 1) - x
            with torch.no_grad():
                # point k = 0 (clean) .. m (full step), one batch of images per point
                correct = torch.stack([logits(x + (k / points) * step).argmax(1) == y for k in range(points + 1)])
            eligible = correct[0] & correct[-1]
            distorted = eligible & ~correct[1:-1].all(dim=0)
            eligible_total += int(eligible.sum())
            distorted_total += int(distorted.sum())
            per_draw.append(float(distorted.sum() / eligible.sum()) if eligible.any() else None)
    return {  # None (JSON null) where no image was right at both ends: nothing to measure
        "distortion": distorted_total / eligible_total if eligible_total else None,
        "eligible": eligible_total,
        "distorted": distorted_total,
        "per_draw": per_draw,
        "images": len(y),
        "draws": draws,
        "points": points,
        "eps": eps,
    }
