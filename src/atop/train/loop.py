"""One training loop for every stage: per-epoch seeding, atomic resume state, loud failures.

Each epoch draws its randomness (batch order, RT masks and noise) from
generators seeded by ``(seed, epoch)``, so an interrupted run that resumes
from its last saved epoch ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import nn

from ..errors import NonFiniteLoss
from ..io import atomic_path

log = logging.getLogger("atop.train")


def epoch_seed(seed: int, epoch: int, stream: int = 0) -> int:
    return (seed * 1_000_003 + epoch * 7919 + stream) % (2**63 - 1)


def batches(
    x: torch.Tensor, y: torch.Tensor, batch_size: int, generator: torch.Generator
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    order = torch.randperm(len(y), generator=generator)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        yield x[idx], y[idx]


def fit(
    *,
    stage: str,
    modules: dict[str, nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
    epochs: int,
    run_epoch: Callable[[int], dict[str, float]],
    resume_path: str | Path,
    fingerprint: dict,
) -> list[dict[str, float]]:
    """Run ``run_epoch(epoch)`` for the remaining epochs; return the per-epoch history."""
    resume_path = Path(resume_path)
    key = json.dumps(fingerprint, sort_keys=True)
    history: list[dict[str, float]] = []
    start = 0
    if resume_path.is_file():
        state = torch.load(resume_path, map_location="cpu", weights_only=True)
        if state.get("fingerprint") == key:
            for name, module in modules.items():
                module.load_state_dict(state["modules"][name])
            for name, optimizer in optimizers.items():
                optimizer.load_state_dict(state["optimizers"][name])
            history = list(state["history"])
            start = int(state["epoch"])
            log.info("%s: resuming after epoch %d/%d from %s", stage, start, epochs, resume_path)
        else:
            log.warning("%s: ignoring %s, it was written for another configuration", stage, resume_path)
    for epoch in range(start, epochs):
        began = time.perf_counter()
        row = run_epoch(epoch)
        bad = {name: value for name, value in row.items() if not math.isfinite(value)}
        if bad:
            raise NonFiniteLoss(
                f"{stage}: non-finite values {bad} in epoch {epoch + 1}; the last good state "
                f"(after epoch {epoch}) is kept in {resume_path}"
            )
        row = {"epoch": epoch + 1, **row, "seconds": round(time.perf_counter() - began, 3)}
        history.append(row)
        with atomic_path(resume_path) as tmp:
            torch.save(
                {
                    "fingerprint": key,
                    "epoch": epoch + 1,
                    "history": history,
                    "modules": {name: m.state_dict() for name, m in modules.items()},
                    "optimizers": {name: o.state_dict() for name, o in optimizers.items()},
                },
                tmp,
            )
        shown = " ".join(f"{k}={v:.4g}" for k, v in row.items() if k != "epoch")
        log.info("%s: epoch %d/%d %s", stage, epoch + 1, epochs, shown)
    return history
