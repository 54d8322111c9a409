"""torchattacks' APGD and APGD-T, made to attack every image and to judge success over draws.

torchattacks 3.5.1's ``perturb`` first classifies the batch with ONE forward
pass and attacks only the images it gets right; the others come back clean.
Of the attacked ones it keeps an iterate only where one forward pass
misclassified it (``x_best_adv``) and returns the CLEAN image elsewhere. On a
deterministic model both are harmless; on a randomized defense a lucky draw
skips an image or returns it clean, and the multi-draw scoring then gives it
partial credit. Here every image handed over is attacked by every restart
(and target class), and per image the candidate with the lowest accuracy over
``draws`` independent forward passes is kept: the highest-loss iterate
(``x_best``) or the last single-draw success (``x_best_adv``); the first run's
highest-loss iterate is the starting choice, so no image comes back clean.
"""

from __future__ import annotations

import torch

from ..torchattacks_lean import torchattacks


class _EveryImage:
    """``perturb`` for APGD-style attacks: attack all images, pick candidates by multi-draw accuracy."""

    draws: int = 1

    @torch.no_grad()
    def accuracy(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        hits = torch.zeros(len(labels), device=images.device)
        for _ in range(self.draws):
            hits += (self.get_logits(images).argmax(dim=1) == labels).float()
        return hits / self.draws

    def runs(self):
        """One item per single run of the attack (restarts; for APGD-T also target classes)."""
        return range(self.n_restarts)

    def perturb(self, x_in: torch.Tensor, y_in: torch.Tensor, best_loss: bool = False, cheap: bool = True):
        if best_loss or not cheap:
            raise ValueError("only the default perturb (cheap, no best_loss) is supported")
        x, y = x_in.clone(), y_in.clone()
        torch.random.manual_seed(self.seed)
        torch.cuda.random.manual_seed(self.seed)
        # Every image gets an attacked point: the first candidate is taken whatever its accuracy.
        best = x.clone()
        best_accuracy = torch.full((len(y),), float("inf"), device=x.device)
        for _ in self.runs():
            highest_loss, _, _, last_success = self.attack_single_run(x, y)
            for candidate in (highest_loss, last_success):
                accuracy = self.accuracy(candidate, y)
                better = accuracy < best_accuracy
                best[better] = candidate[better].detach()
                best_accuracy = torch.where(better, accuracy, best_accuracy)
        return best_accuracy, best


class EveryImageAPGD(_EveryImage, torchattacks.APGD):
    def __init__(self, model, *, draws: int = 1, **kwargs):
        super().__init__(model, **kwargs)
        self.draws = draws


class EveryImageAPGDT(_EveryImage, torchattacks.APGDT):
    def __init__(self, model, *, draws: int = 1, **kwargs):
        super().__init__(model, **kwargs)
        self.draws = draws

    def runs(self):
        for target_class in range(2, self.n_target_classes + 2):
            self.target_class = target_class  # read by attack_single_run's targeted DLR loss
            yield from range(self.n_restarts)
