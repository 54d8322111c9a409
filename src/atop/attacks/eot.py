"""Full-gradient PGD with expectation over transformation, batched: one attack for every loss and norm."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..registry import Registry
from ..torchattacks_lean import Attack

# Images per forward pass by device when max_batch is None (see the class docstring).
DEFAULT_MAX_BATCH = {"cuda": 4096, "cpu": 128}

# Per-image losses the attack ascends; each maps (logits, labels) -> one value per image.
LOSSES: Registry = Registry("attack loss")


@LOSSES.register("ce")
def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, labels, reduction="none")


@LOSSES.register("cw")
def cw_margin(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Carlini-Wagner margin: best other logit minus the true logit (positive = misclassified).

    The other classes are masked with -inf, not multiplied by a zero one-hot: with
    all-negative logits a zeroed true class would win the max and hide the real margin.
    """
    true = logits.gather(1, labels[:, None]).squeeze(1)
    other = logits.masked_fill(F.one_hot(labels, logits.shape[1]).bool(), float("-inf")).max(dim=1).values
    return other - true


def _per_image_l2(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (t.dim() - 1)))


def _linf_step(grad: torch.Tensor, alpha: float) -> torch.Tensor:
    return alpha * grad.sign()


def _linf_project(delta: torch.Tensor, eps: float) -> torch.Tensor:
    return delta.clamp(-eps, eps)


def _linf_start(images: torch.Tensor, eps: float) -> torch.Tensor:
    return torch.empty_like(images).uniform_(-eps, eps)


def _l2_step(grad: torch.Tensor, alpha: float) -> torch.Tensor:
    return alpha * grad / _per_image_l2(grad)


def _l2_project(delta: torch.Tensor, eps: float) -> torch.Tensor:
    return delta * (eps / _per_image_l2(delta)).clamp(max=1.0)


def _l2_start(images: torch.Tensor, eps: float) -> torch.Tensor:
    # Uniform in the L2 ball: a random direction, radius eps * u^(1/d).
    direction = torch.randn_like(images)
    radius = eps * torch.rand(len(images), device=images.device) ** (1 / images[0].numel())
    return direction / _per_image_l2(direction) * radius.view(-1, *([1] * (images.dim() - 1)))


# How the EOT draws' gradients are combined: their mean, or selective EOT (selective_gradient).
EOT_WEIGHTINGS = ("mean", "selective")

# norm -> (step from the gradient, projection of the perturbation, random start)
NORMS = {"Linf": (_linf_step, _linf_project, _linf_start), "L2": (_l2_step, _l2_project, _l2_start)}


class BatchedEOTPGD(Attack):
    """PGD (Linf or L2, CE or CW-margin loss) with expectation over transformation, batched.

    Each step replicates the batch ``eot_iter`` times, so a randomized model
    draws independent randomness per replica, and one forward and backward
    pass gives the gradient of the summed loss - the same expected gradient
    as torchattacks' sequential ``EOTPGD``. ``max_batch`` bounds the images
    per pass (replicas are grouped up to it, never split); ``None`` picks the
    device's best: on a GPU all replicas at once (one launch sequence instead
    of ``eot_iter``), on a CPU passes of about 128 images, since CPU throughput falls
    once a pass outgrows the cache (see benchmarks/eot.py).

    Linf steps by ``alpha * sign(grad)`` and clips to the cube; L2 steps by
    ``alpha`` along the per-image unit gradient and rescales onto the ball.
    The result is the last iterate (no best-iterate picking on a noisy pass).
    FGSM is one step with ``alpha = eps`` and no random start.

    Every forward pass is also a query: ``fooled`` holds, after each call, which images any of
    them misclassified (untargeted), for the while-optimizing protocol (protocols.py).
    """

    def __init__(
        self,
        model,
        eps=8 / 255,
        alpha=2 / 255,
        steps=10,
        eot_iter=2,
        random_start=True,
        max_batch=None,
        norm="Linf",
        loss="ce",
        eot_weighting="mean",
    ):
        super().__init__("BatchedEOTPGD", model)
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {sorted(NORMS)}, got {norm!r}")
        if eot_weighting not in EOT_WEIGHTINGS:
            raise ValueError(f"eot_weighting must be one of {EOT_WEIGHTINGS}, got {eot_weighting!r}")
        self.eot_weighting = eot_weighting
        self.eps, self.alpha, self.steps = eps, alpha, steps
        self.eot_iter, self.random_start, self.max_batch = eot_iter, random_start, max_batch
        self.norm, self.loss = norm, loss
        self.loss_fn = LOSSES[loss]
        self.supported_mode = ["default", "targeted"]
        self.fooled: torch.Tensor | None = None  # images some query misclassified, during and after a call

    def eot_gradient(self, adv: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.eot_weighting == "selective":
            return self.selective_gradient(adv, labels)
        adv = adv.detach().requires_grad_(True)
        max_batch = self.max_batch or DEFAULT_MAX_BATCH.get(adv.device.type, 1)
        per_chunk = max(1, max_batch // len(adv))
        grad = torch.zeros_like(adv)
        remaining = self.eot_iter
        while remaining > 0:
            k = min(per_chunk, remaining)
            logits = self.get_logits(adv.repeat(k, *([1] * (adv.dim() - 1))))
            if self.fooled is not None and not self.targeted:
                self.fooled |= (logits.argmax(1) != labels.repeat(k)).view(k, -1).any(0)
            cost = self.loss_fn(logits, labels.repeat(k)).sum()
            if self.targeted:
                cost = -cost
            grad += torch.autograd.grad(cost, adv)[0]
            remaining -= k
        return grad / self.eot_iter

    def selective_gradient(self, adv: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Selective EOT (after DiffHammer, NeurIPS 2024): each draw's gradient weighted by the softmax of
        its loss over the draws of that image, so the draws closest to a misclassification dominate
        instead of an average that the others can cancel. Each draw's gradient comes from one backward
        pass through a replicated leaf (the same passes as the mean)."""
        max_batch = self.max_batch or DEFAULT_MAX_BATCH.get(adv.device.type, 1)
        per_chunk = max(1, max_batch // len(adv))
        grads, losses = [], []
        remaining = self.eot_iter
        while remaining > 0:
            k = min(per_chunk, remaining)
            replicas = adv.detach().repeat(k, *([1] * (adv.dim() - 1))).requires_grad_(True)
            logits = self.get_logits(replicas)
            if self.fooled is not None and not self.targeted:
                self.fooled |= (logits.argmax(1) != labels.repeat(k)).view(k, -1).any(0)
            per_draw = self.loss_fn(logits, labels.repeat(k))
            if self.targeted:
                per_draw = -per_draw
            grads.append(torch.autograd.grad(per_draw.sum(), replicas)[0].view(k, *adv.shape))
            losses.append(per_draw.detach().view(k, len(adv)))
            remaining -= k
        weights = torch.cat(losses).softmax(dim=0)  # (draws, images): over the draws of each image
        return (weights.view(*weights.shape, *([1] * (adv.dim() - 1))) * torch.cat(grads)).sum(0)

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        images = images.clone().detach().to(self.device)
        labels = labels.clone().detach().to(self.device)
        if self.targeted:
            labels = self.get_target_label(images, labels)
        step, project, start = NORMS[self.norm]
        self.fooled = torch.zeros(len(images), dtype=torch.bool, device=images.device)
        adv = images.clone()
        if self.random_start:
            adv = (adv + start(images, self.eps)).clamp(0, 1)
        for _ in range(self.steps):
            grad = self.eot_gradient(adv, labels)
            adv = adv.detach() + step(grad, self.alpha)
            adv = (images + project(adv - images, self.eps)).clamp(0, 1)
        return adv.detach()
