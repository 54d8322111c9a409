"""Classifier training: the standard recipe, and the shared loop PGD adversarial training reuses.

The recipe is configurable (``classifier.*``): Adam or SGD with momentum, a
constant or cosine learning-rate schedule, random crop + horizontal flip
augmentation, label smoothing. The schedule is a function of the epoch, so a
resumed run sets the same learning rate without any scheduler state.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..data import PreparedData
from ..fastpath import FastPath
from ..metrics import correct_per_draw
from ..models import build_classifier
from ..registry import Registry
from .loop import batches, epoch_seed, fit

OPTIMIZERS: Registry = Registry("optimizer")
OPTIMIZERS.register("adam")(
    lambda params, spec: torch.optim.Adam(params, lr=spec["lr"], weight_decay=spec["weight_decay"])
)
OPTIMIZERS.register("sgd")(
    lambda params, spec: torch.optim.SGD(
        params, lr=spec["lr"], momentum=spec["momentum"], weight_decay=spec["weight_decay"], nesterov=spec["nesterov"]
    )
)

SCHEDULES: Registry = Registry("learning-rate schedule")
SCHEDULES.register("constant")(lambda epoch, epochs: 1.0)
SCHEDULES.register("cosine")(lambda epoch, epochs: 0.5 * (1 + math.cos(math.pi * epoch / epochs)))

# Keys the recipe added after the digits default; their defaults keep that default's behaviour.
RECIPE_DEFAULTS = {
    "optimizer": "adam",
    "momentum": 0.9,
    "nesterov": False,
    "schedule": "constant",
    "augment": False,
    "crop_padding": 4,
    "label_smoothing": 0.0,
}

InputFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def crop_flip(x: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Random crop after zero padding by ``padding`` pixels, and a random horizontal flip, per image."""
    n, c, h, w = x.shape
    offsets = torch.randint(0, 2 * padding + 1, (2, n), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5
    padded = F.pad(x, (padding,) * 4)
    rows = (offsets[0, :, None] + torch.arange(h))[:, None, :, None]
    cols = (offsets[1, :, None] + torch.arange(w))[:, None, None, :]
    cropped = padded[torch.arange(n)[:, None, None, None], torch.arange(c)[None, :, None, None], rows, cols]
    return torch.where(flip.view(n, 1, 1, 1), cropped.flip(3), cropped)


def recipe(spec: dict) -> dict:
    return {**RECIPE_DEFAULTS, **spec}


def classifier_meta(data: PreparedData, spec: dict) -> dict:
    return {
        "arch": spec["arch"],
        "num_classes": data.num_classes,
        "mean": data.info["mean"],
        "std": data.info["std"],
        "image_size": data.info["image_shape"][-1],
        **spec.get("arch_params", {}),
    }


def fit_classifier(
    data: PreparedData,
    spec: dict,
    seed: int,
    device: torch.device,
    resume_path,
    stage: str,
    make_input: Callable[[nn.Module], InputFn] | None = None,
    fingerprint: dict | None = None,
    fast: FastPath = FastPath(),
    validate: Callable[[nn.Module], dict[str, float]] | None = None,
    select: str | None = None,
):
    """Train a classifier with the configured recipe; ``make_input(model)`` turns each batch into
    what the model trains on (e.g. adversarial examples). ``fast`` is the GPU fast path (layout,
    autocast, compile). ``validate(model)`` adds metrics to each epoch's row (model in eval mode);
    ``select`` names the one whose best epoch is kept (see :func:`fit`). Return
    ``(model, model_meta, history)``."""
    torch.manual_seed(seed)
    spec = recipe(spec)
    model_meta = classifier_meta(data, spec)
    model = fast.prepare(build_classifier(**model_meta).to(device))
    forward = fast.runner(model)  # shares model's parameters; state is saved from model
    optimizer = OPTIMIZERS[spec["optimizer"]](model.parameters(), spec)
    lr_factor = SCHEDULES[spec["schedule"]]
    to_input = make_input(forward) if make_input else None
    x_train, y_train = data.images("train"), data.labels("train")
    x_val, y_val = data.images("val"), data.labels("val")

    def run_epoch(epoch: int) -> dict[str, float]:
        for group in optimizer.param_groups:
            group["lr"] = spec["lr"] * lr_factor(epoch, spec["epochs"])
        order = torch.Generator().manual_seed(epoch_seed(seed, epoch))
        augment = torch.Generator().manual_seed(epoch_seed(seed, epoch, stream=1))
        torch.manual_seed(epoch_seed(seed, epoch, stream=2))  # torchattacks' random starts use the global RNG
        total, seen = 0.0, 0
        for xb, yb in batches(x_train, y_train, spec["batch_size"], order):
            if spec["augment"]:
                xb = crop_flip(xb, spec["crop_padding"], augment)
            xb, yb = fast.inputs(xb.to(device)), yb.to(device)
            with fast.mixed_precision(device):
                if to_input is not None:
                    xb = to_input(xb, yb).detach()
                model.train()
                logits = forward(xb)
            loss = F.cross_entropy(logits.float(), yb, label_smoothing=spec["label_smoothing"])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(yb)
            seen += len(yb)
        model.eval()
        val_acc = correct_per_draw(model, x_val, y_val, 1, 256).float().mean().item()
        row = {"train_loss": total / seen, "val_accuracy": val_acc, "lr": optimizer.param_groups[0]["lr"]}
        return row | (validate(forward) if validate else {})

    history = fit(
        stage=stage,
        modules={"model": model},
        optimizers={"model": optimizer},
        epochs=spec["epochs"],
        run_epoch=run_epoch,
        resume_path=resume_path,
        fingerprint=fingerprint or {"spec": spec, "seed": seed, "data": data.info},
        select=select,
    )
    return model.eval(), model_meta, history


def train_classifier(
    data: PreparedData, spec: dict, seed: int, device: torch.device, resume_path, fast: FastPath = FastPath()
):
    """Standard training of the configured classifier; return ``(model, model_meta, history)``."""
    return fit_classifier(data, spec, seed, device, resume_path, stage="train_classifier", fast=fast)
