"""Worst case over a sequence of attacks, per sample - the AutoAttack protocol.

Each attack runs only on the samples that no earlier attack has broken, and a
sample keeps the adversarial example under which the model is least accurate.
On a randomized model "broken" is judged over ``draws`` independent forward
passes (wrong on every draw), never on one stochastic pass: torchattacks'
``MultiAttack`` drops a sample after a single lucky misclassification, which
overstates attack success and can hide the weakest attack.
"""

from __future__ import annotations

import torch

from ..torchattacks_lean import Attack


class WorstCaseEnsemble(Attack):
    def __init__(self, model, attacks: list[Attack], draws: int = 1):
        super().__init__("WorstCaseEnsemble", model)
        self.attacks = attacks
        self.draws = draws
        self.supported_mode = ["default"]

    @torch.no_grad()
    def accuracy_per_sample(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        hits = torch.zeros(len(labels), device=self.device)
        for _ in range(self.draws):
            hits += (self.get_logits(images).argmax(dim=1) == labels).float()
        return hits / self.draws

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        images = images.clone().detach().to(self.device)
        labels = labels.clone().detach().to(self.device)
        best = images.clone()
        best_accuracy = self.accuracy_per_sample(images, labels)
        for attack in self.attacks:
            todo = (best_accuracy > 0).nonzero().squeeze(1)
            if len(todo) == 0:
                break
            candidate = attack(images[todo], labels[todo]).to(self.device)
            accuracy = self.accuracy_per_sample(candidate, labels[todo])
            better = accuracy < best_accuracy[todo]
            best[todo[better]] = candidate[better]
            best_accuracy[todo[better]] = accuracy[better]
        return best
