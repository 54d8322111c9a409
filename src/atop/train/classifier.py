"""Standard (non-adversarial) classifier training."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..data import PreparedData
from ..metrics import correct_per_draw
from ..models import build_classifier
from .loop import batches, epoch_seed, fit


def train_classifier(data: PreparedData, spec: dict, seed: int, device: torch.device, resume_path):
    """Train the configured classifier; return ``(model, model_meta, history)``."""
    torch.manual_seed(seed)
    model_meta = {
        "arch": spec["arch"],
        "num_classes": data.num_classes,
        "mean": data.info["mean"],
        "std": data.info["std"],
        "image_size": data.info["image_shape"][-1],
        **spec.get("arch_params", {}),
    }
    model = build_classifier(**model_meta).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=spec["lr"], weight_decay=spec["weight_decay"])
    x_train, y_train = data.images("train"), data.labels("train")
    x_val, y_val = data.images("val"), data.labels("val")

    def run_epoch(epoch: int) -> dict[str, float]:
        model.train()
        order = torch.Generator().manual_seed(epoch_seed(seed, epoch))
        total, seen = 0.0, 0
        for xb, yb in batches(x_train, y_train, spec["batch_size"], order):
            xb, yb = xb.to(device), yb.to(device)
            loss = F.cross_entropy(model(xb), yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(yb)
            seen += len(yb)
        model.eval()
        val_acc = correct_per_draw(model, x_val, y_val, 1, 256).float().mean().item()
        return {"train_loss": total / seen, "val_accuracy": val_acc}

    history = fit(
        stage="train_classifier",
        modules={"model": model},
        optimizers={"model": optimizer},
        epochs=spec["epochs"],
        run_epoch=run_epoch,
        resume_path=resume_path,
        fingerprint={"spec": spec, "seed": seed, "data": data.info},
    )
    return model.eval(), model_meta, history
