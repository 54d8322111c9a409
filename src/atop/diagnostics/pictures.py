"""The pictures people look at first: a few fixed test images through each defense.

Per defense and image: the clean image, the image after the random transform (RT), the
purified image, the full-gradient adversarial example and its purified version, each
labelled with the defense's prediction (one draw). Defenses without a purifier show
the clean and adversarial image only.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")

import torch
from torch import nn

from ..io import atomic_path
from .measures import adversarial_examples

PANELS = ("clean", "after RT", "purified", "adversarial", "adversarial, purified")


@torch.no_grad()
def _through_defense(defense: nn.Module, x: torch.Tensor, seed: int) -> dict[str, torch.Tensor | None]:
    """RT output, purified image and prediction of one draw (the same draw for all three)."""
    if getattr(defense, "transform", None) is None:
        return {"rt": None, "purified": None, "prediction": defense(x).argmax(dim=1)}
    defense.reseed(seed)
    transformed, _mask = defense.transform(x)
    defense.reseed(seed)
    purified = defense.purify(x)
    defense.reseed(seed)
    return {"rt": transformed, "purified": purified, "prediction": defense(x).argmax(dim=1)}


def _cpu(tensor: torch.Tensor | None) -> torch.Tensor | None:
    return None if tensor is None else tensor.detach().cpu()


def defense_pictures(defense: nn.Module, attack, x: torch.Tensor, y: torch.Tensor, seed: int) -> dict:
    """The five pictures of each image (None where the defense has no such step) and the predictions."""
    device = next(defense.parameters()).device
    x, y = x.to(device), y.to(device)
    adversarial = adversarial_examples(defense, attack, x, y, seed)
    clean, attacked = _through_defense(defense, x, seed + 1), _through_defense(defense, adversarial, seed + 1)
    return {
        "images": {
            "clean": _cpu(x),
            "after RT": _cpu(clean["rt"]),
            "purified": _cpu(clean["purified"]),
            "adversarial": _cpu(adversarial),
            "adversarial, purified": _cpu(attacked["purified"]),
        },
        "labels": y.cpu().tolist(),
        "clean_prediction": clean["prediction"].cpu().tolist(),
        "adversarial_prediction": attacked["prediction"].cpu().tolist(),
        "max_perturbation_linf": (adversarial - x).abs().max().item(),
    }


def pictures_figure(pictures: dict[str, dict], path: Path) -> Path:
    """One row per (image, defense), one column per panel (clean, after RT, purified, ...); written atomically as PNG."""
    import matplotlib.pyplot as plt

    defenses = list(pictures)
    n_images = len(next(iter(pictures.values()))["labels"])
    rows = [(i, d) for i in range(n_images) for d in defenses]
    fig, axes = plt.subplots(len(rows), len(PANELS), figsize=(1.6 * len(PANELS), 1.7 * len(rows)), squeeze=False)
    for row, (image, defense) in enumerate(rows):
        entry = pictures[defense]
        for column, panel in enumerate(PANELS):
            ax = axes[row, column]
            ax.set_xticks([])
            ax.set_yticks([])
            picture = entry["images"][panel]
            if picture is None:
                ax.text(0.5, 0.5, "no purifier", ha="center", va="center", color="0.5", fontsize=7)
                ax.set_frame_on(False)
            else:
                ax.imshow(picture[image].clamp(0, 1).permute(1, 2, 0).numpy(), interpolation="nearest")
            caption = {
                "clean": f"pred {entry['clean_prediction'][image]}",
                "adversarial": f"pred {entry['adversarial_prediction'][image]}",
            }.get(panel, "")
            ax.set_xlabel(caption, fontsize=7)
            if row == 0:
                ax.set_title(panel, fontsize=8)
        axes[row, 0].set_ylabel(f"#{image} (y={entry['labels'][image]})\n{defense}", fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path
