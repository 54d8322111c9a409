"""Robust-generalization measures of a defense (the margin, smoothness and flatness families
of Kim, Park, Choi & Lee, "Fantastic Robustness Measures", NeurIPS 2023).

Per defense, on a seeded subset of training images and the evaluation's fixed test images,
both attacked by the same attack at the same budget (``diagnostics.attack``):

- robust generalization gap: robust accuracy on the training images minus on the test images, with
  its 95 % interval (Newcombe's difference of two continuity-corrected Wilson intervals, stats.py):
  on a few images per split the interval says the gap cannot be told from 0;
- output margin f_y(x_adv) - max_{j != y} f_j(x_adv) (logits; negative when x_adv fools the model);
- input-gradient norm ||grad_x CE(f(x_adv), y)||_2 at the adversarial example;
- KL(p(x) || p(x_adv)) between the softmax predictions on the clean and adversarial image;
- average-case weight flatness (Stutz, Hein & Schiele, ICCV 2021): the robust loss (CE at
  adversarial examples recomputed for the perturbed weights) after random relative per-layer
  weight perturbations, minus the robust loss before; each parameter tensor of a non-normalisation
  layer gets a Gaussian direction scaled to ``xi`` times its own L2 norm, averaged over draws.
  Measured for the classifier and, in front of it, the purifier.

Margin, gradient norm, KL and flatness are measured on the training images (generalization
measures are computed from training data), and the same values on the test images are kept too.
A randomized defense is drawn ``draws`` times and every measure averaged over the draws; the
clean and adversarial image of one draw share its randomness (common random numbers), so
KL is exactly 0 where the attack left an image unchanged.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ..stats import difference_interval

# Normalisation layers keep their weights in flatness measures (Stutz et al. exclude them).
NORM_LAYERS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)


def output_margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """f_y - max_{j != y} f_j per sample."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    others = logits.scatter(1, y[:, None], float("-inf"))
    return true - others.max(dim=1).values


def kl_divergence(clean_logits: torch.Tensor, adversarial_logits: torch.Tensor) -> torch.Tensor:
    """KL(p(x) || p(x_adv)) per sample, from logits."""
    log_p = F.log_softmax(clean_logits, dim=1)
    log_q = F.log_softmax(adversarial_logits, dim=1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=1).clamp_min(0)


def input_gradient_norm(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """||grad_x CE(model(x), y)||_2 per sample."""
    x = x.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(model(x), y, reduction="sum"), x)
    return grad.flatten(1).norm(dim=1)


def _reseed(model: nn.Module, seed: int) -> None:
    if hasattr(model, "reseed"):
        model.reseed(seed)


def per_draw(model: nn.Module, draws: int, seed: int, measure: Callable[[], torch.Tensor]) -> torch.Tensor:
    """(draws, N): ``measure`` once per draw, the model reseeded to ``seed + d`` before each."""
    rows = []
    for draw in range(draws):
        _reseed(model, seed + draw)
        rows.append(measure().detach().cpu())
    return torch.stack(rows)


def adversarial_examples(model: nn.Module, attack, x: torch.Tensor, y: torch.Tensor, seed: int) -> torch.Tensor:
    """The attack's images, seeded (random start and the model's randomness) so reruns agree."""
    torch.manual_seed(seed)
    _reseed(model, seed)
    return attack(x, y).detach()


def robust_loss(model: nn.Module, attack, x: torch.Tensor, y: torch.Tensor, draws: int, seed: int) -> float:
    """Mean CE at the attack's adversarial examples of ``model``, over images and draws."""
    adversarial = adversarial_examples(model, attack, x, y, seed)
    with torch.no_grad():
        losses = per_draw(model, draws, seed + 1, lambda: F.cross_entropy(model(adversarial), y, reduction="none"))
    return losses.mean().item()


@contextlib.contextmanager
def perturbed_weights(network: nn.Module, xi: float, generator: torch.Generator) -> Iterator[int]:
    """Adds to each parameter of every non-normalisation layer a random direction of L2 norm xi * its norm.

    Yields the number of perturbed tensors; the weights are restored on exit.
    """
    if xi < 0:
        raise ValueError(f"xi = {xi}: a relative weight-perturbation radius cannot be negative")
    saved = []
    with torch.no_grad():
        for module in network.modules():
            if isinstance(module, NORM_LAYERS):
                continue
            for param in module.parameters(recurse=False):
                direction = torch.randn(param.shape, generator=generator).to(param.device, param.dtype)
                scale = xi * param.norm() / direction.norm().clamp_min(1e-30)
                saved.append((param, param.detach().clone()))
                param.add_(direction * scale)
    try:
        yield len(saved)
    finally:
        with torch.no_grad():
            for param, original in saved:
                param.copy_(original)


def weight_flatness(
    model: nn.Module,
    network: nn.Module,
    attack,
    x: torch.Tensor,
    y: torch.Tensor,
    xi: float = 0.5,
    perturbations: int = 10,
    draws: int = 1,
    seed: int = 0,
) -> dict:
    """Average-case robust flatness of ``network`` (a part of ``model``): robust loss after minus before.

    ``attack`` attacks ``model``; it is rerun for every perturbed network, as the robust loss
    of the perturbed model is the maximum over inputs for those weights.
    """
    if xi < 0:
        raise ValueError(f"xi = {xi}: a relative weight-perturbation radius cannot be negative")
    if perturbations < 1:
        raise ValueError(f"perturbations = {perturbations} must be at least 1")
    before = robust_loss(model, attack, x, y, draws, seed)
    generator = torch.Generator().manual_seed(seed)
    after = []
    for _ in range(perturbations):
        with perturbed_weights(network, xi, generator) as perturbed:
            after.append(robust_loss(model, attack, x, y, draws, seed))
    mean_after = sum(after) / len(after)
    return {
        "xi": xi,
        "perturbations": perturbations,
        "perturbed_tensors": perturbed,
        "robust_loss_before": before,
        "robust_loss_after": after,
        "flatness": mean_after - before,
    }


def _split_measures(model: nn.Module, x, adversarial, y, draws: int, seed: int) -> dict:
    """Accuracy, margin, KL and gradient norm at one split's adversarial examples, per draw (CRN)."""

    clean_rows, adversarial_rows = [], []
    with torch.no_grad():
        for draw in range(draws):
            # the clean and the adversarial image of one draw see the same randomness
            _reseed(model, seed + draw)
            clean_rows.append(model(x).cpu())
            _reseed(model, seed + draw)
            adversarial_rows.append(model(adversarial).cpu())
    clean, adv = torch.stack(clean_rows), torch.stack(adversarial_rows)  # (draws, N, C)
    yc = y.cpu()
    grad_norms = per_draw(model, draws, seed, lambda: input_gradient_norm(model, adversarial, y))
    return {
        "clean_accuracy": (clean.argmax(dim=2) == yc).double().mean().item(),
        "robust_accuracy": (adv.argmax(dim=2) == yc).double().mean().item(),
        "margin": torch.stack([output_margin(a, yc) for a in adv]).double().mean().item(),
        "kl": torch.stack([kl_divergence(c, a) for c, a in zip(clean, adv)]).double().mean().item(),
        "input_gradient_norm": grad_norms.double().mean().item(),
        "n": len(y),
    }


def robustness_measures(
    model: nn.Module,
    attack,
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    draws: int,
    seed: int,
    flatness_xi: float = 0.5,
    flatness_draws: int = 10,
    networks: dict[str, nn.Module] | None = None,
) -> dict:
    """Every measure of the module docstring for ``model``; ``networks`` names the parts whose flatness is measured."""
    device = next(model.parameters()).device
    splits = {}
    for offset, (name, (x, y)) in enumerate({"train": train, "test": test}.items()):
        x, y = x.to(device), y.to(device)
        adversarial = adversarial_examples(model, attack, x, y, seed + 100 * offset)
        splits[name] = _split_measures(model, x, adversarial, y, draws, seed + 100 * offset + 1)
    x, y = train[0].to(device), train[1].to(device)
    flatness = {
        part: weight_flatness(model, network, attack, x, y, flatness_xi, flatness_draws, draws, seed + 1000)
        for part, network in (networks or {}).items()
    }
    train_acc, test_acc = splits["train"]["robust_accuracy"], splits["test"]["robust_accuracy"]
    return {
        "draws": draws,
        "robust_generalization_gap": train_acc - test_acc,
        "robust_generalization_gap_interval": list(
            difference_interval(train_acc, splits["train"]["n"], test_acc, splits["test"]["n"])
        ),
        "train": splits["train"],
        "test": splits["test"],
        "flatness": flatness,
    }
