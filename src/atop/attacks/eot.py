"""Full-gradient PGD with expectation over transformation, batched."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchattacks.attack import Attack

# Images per forward pass by device when max_batch is None (see the class docstring).
DEFAULT_MAX_BATCH = {"cuda": 4096, "cpu": 128}


class BatchedEOTPGD(Attack):
    """PGD-Linf with expectation over transformation, EOT samples batched into few passes.

    Each step replicates the batch ``eot_iter`` times, so a randomized model
    draws independent randomness per replica, and one forward and backward
    pass gives the gradient of the summed loss - the same expected gradient
    as torchattacks' sequential ``EOTPGD``. ``max_batch`` bounds the images
    per pass (replicas are grouped up to it, never split); ``None`` picks the
    device's best: on a GPU all replicas at once (one launch sequence instead
    of ``eot_iter``), on a CPU passes of about 128 images, since CPU throughput falls
    once a pass outgrows the cache (see benchmarks/eot.py).
    """

    def __init__(self, model, eps=8 / 255, alpha=2 / 255, steps=10, eot_iter=2, random_start=True, max_batch=None):
        super().__init__("BatchedEOTPGD", model)
        self.eps, self.alpha, self.steps = eps, alpha, steps
        self.eot_iter, self.random_start, self.max_batch = eot_iter, random_start, max_batch
        self.supported_mode = ["default", "targeted"]

    def eot_gradient(self, adv: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        adv = adv.detach().requires_grad_(True)
        max_batch = self.max_batch or DEFAULT_MAX_BATCH.get(adv.device.type, 1)
        per_chunk = max(1, max_batch // len(adv))
        grad = torch.zeros_like(adv)
        remaining = self.eot_iter
        while remaining > 0:
            k = min(per_chunk, remaining)
            logits = self.get_logits(adv.repeat(k, 1, 1, 1))
            cost = F.cross_entropy(logits, labels.repeat(k), reduction="sum")
            if self.targeted:
                cost = -cost
            grad += torch.autograd.grad(cost, adv)[0]
            remaining -= k
        return grad / self.eot_iter

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        images = images.clone().detach().to(self.device)
        labels = labels.clone().detach().to(self.device)
        if self.targeted:
            labels = self.get_target_label(images, labels)
        adv = images.clone()
        if self.random_start:
            adv = (adv + torch.empty_like(adv).uniform_(-self.eps, self.eps)).clamp(0, 1)
        for _ in range(self.steps):
            grad = self.eot_gradient(adv, labels)
            adv = adv.detach() + self.alpha * grad.sign()
            adv = (images + (adv - images).clamp(-self.eps, self.eps)).clamp(0, 1)
        return adv.detach()
