"""The overfitting monitor of adversarial training (the AT baseline and AToP fine-tuning).

Per epoch, on fixed images: clean, FGSM (one eps step) and PGD (``steps`` steps of 2.5 eps / steps
from a random start, so it can cross the whole ball and back: Madry et al.'s rule) accuracy on a
fixed training batch and a fixed validation batch, the images drawn once by ``monitor.seed``. For
the AT baseline the attacks run on the classifier; for AToP fine-tuning through the whole defended
model (RT + purifier + classifier) with ``eot`` samples per gradient and one scored draw, its
randomness seeded the same every epoch. The monitor runs on its own RNG streams and hands every RNG
(torch's CPU one, every CUDA device's, and the RT's) back as it found it, and every module's
train/eval flag (diagnostics/rng.py, shared with decision-boundary distortion), so training is
bitwise the same with or without it. The number of images per batch is written beside the
accuracies (``train_images``, ``val_images``): the detectors test counts.

The columns go to the stage's training curve; the detectors that judge them (catastrophic and
robust overfitting) are diagnostics/detectors.py, read by the report; the ``monitor:`` settings
are checked in diagnostics/settings.py. Its FGSM and PGD are literal ``build_attack`` calls, so a
training job's code closure (code_closure.py) holds their modules and no other attack's.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from ..attacks import build_attack
from ..diagnostics.detectors import IMAGE_COLUMNS, MONITORED, SPLITS, pgd_above_fgsm
from ..diagnostics.rng import preserved_modes, preserved_rng, reseed
from ..metrics import correct_per_draw

log = logging.getLogger(__name__)


def fixed_batch(x: torch.Tensor, y: torch.Tensor, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` images chosen once by ``seed`` (sorted positions); the whole split if it has fewer."""
    idx = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))[:n].sort().values
    return x[idx], y[idx]


class OverfittingMonitor:
    """Clean / FGSM / PGD accuracy on fixed training and validation batches, once per epoch."""

    def __init__(self, train, val, eps: float, settings: dict, batch_size: int = 128) -> None:
        self.eps, self.settings, self.batch_size = float(eps), settings, batch_size
        self.batches = {}
        for offset, (split, (x, y)) in enumerate(zip(SPLITS, (train, val))):
            if settings[f"{split}_images"]:  # 0: no such batch
                self.batches[split] = fixed_batch(x, y, settings[f"{split}_images"], settings["seed"] + offset)

    @property
    def enabled(self) -> bool:
        return bool(self.batches)

    def attacks(self, model: nn.Module):
        eot = self.settings["eot"]
        fgsm = build_attack("fgsm", model, {"eps": self.eps, "eot": "auto"}, eot=eot)
        steps = self.settings["steps"]
        pgd = build_attack(
            "pgd_linf", model, {"eps": self.eps, "alpha": pgd_step(self.eps, steps), "steps": steps}, eot=eot
        )
        return {"fgsm": fgsm, "pgd": pgd}

    def __call__(self, model: nn.Module) -> dict[str, float]:
        """The monitor's columns for ``model``; every RNG and every module's mode is handed back unchanged."""
        if not self.enabled:
            return {}
        row: dict[str, float] = {}
        device = next(model.parameters()).device
        with preserved_modes(model), preserved_rng(model):
            model.eval()
            attacks = self.attacks(model)
            for split, (x, y) in self.batches.items():
                for offset, name in enumerate(MONITORED):
                    seed = self.settings["seed"] + 101 * offset
                    torch.manual_seed(seed)  # PGD's random start
                    reseed(model, seed)
                    inputs = x
                    if name in attacks:
                        inputs = torch.cat(
                            [
                                attacks[name](
                                    x[s : s + self.batch_size].to(device), y[s : s + self.batch_size].to(device)
                                )
                                .detach()
                                .cpu()
                                for s in range(0, len(y), self.batch_size)
                            ]
                        )
                    reseed(model, seed + 1)
                    model.eval()  # torchattacks restores the mode it found; scoring is in eval mode
                    row[f"{split}_{name}"] = (
                        correct_per_draw(model, inputs, y, 1, self.batch_size).float().mean().item()
                    )
        row |= {IMAGE_COLUMNS[split]: len(y) for split, (_, y) in self.batches.items()}
        for split, epochs in pgd_above_fgsm([row]).items():
            if epochs:
                log.warning(
                    "overfitting monitor: PGD scored above FGSM on the %s batch (%.3f vs %.3f): the monitor's "
                    "PGD is weaker than one FGSM step here, so the catastrophic-overfitting signal is unreliable",
                    split,
                    row[f"{split}_pgd"],
                    row[f"{split}_fgsm"],
                )
        return row


def pgd_step(eps: float, steps: int) -> float:
    """2.5 eps / steps (Madry et al. 2018): the steps can travel across the eps-ball from any random start."""
    return 2.5 * eps / steps
