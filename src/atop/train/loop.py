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
    x: torch.Tensor, y: torch.Tensor, batch_size: int, generator: torch.Generator, limit: int | None = None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Shuffled batches of the first ``limit`` images of a fresh permutation (default: all of them)."""
    order = torch.randperm(len(y), generator=generator)[:limit]
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
    select: str | None = None,
) -> list[dict[str, float]]:
    """Run ``run_epoch(epoch)`` for the remaining epochs; return the per-epoch history.

    With ``select`` (a metric ``run_epoch`` returns), the modules end with the weights of the epoch
    where it was highest (the earliest on ties), and each history row gets ``selected`` 1 or 0.
    """
    resume_path = Path(resume_path)
    key = json.dumps(fingerprint, sort_keys=True)
    history: list[dict[str, float]] = []
    best: dict | None = None  # {"epoch", "value", "modules"}: the selected epoch so far
    start = 0
    if resume_path.is_file():
        state = torch.load(resume_path, map_location="cpu", weights_only=True)
        if state.get("fingerprint") == key:
            for name, module in modules.items():
                module.load_state_dict(state["modules"][name])
            for name, optimizer in optimizers.items():
                optimizer.load_state_dict(state["optimizers"][name])
            history = list(state["history"])
            best = state.get("best")
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
        if select is not None and (best is None or row[select] > best["value"]):
            best = {"epoch": epoch + 1, "value": row[select], "modules": _copy_states(modules)}
        with atomic_path(resume_path) as tmp:
            torch.save(
                {
                    "fingerprint": key,
                    "epoch": epoch + 1,
                    "history": history,
                    "modules": {name: m.state_dict() for name, m in modules.items()},
                    "optimizers": {name: o.state_dict() for name, o in optimizers.items()},
                    "best": best,
                },
                tmp,
            )
        shown = " ".join(f"{k}={v:.4g}" for k, v in row.items() if k != "epoch")
        log.info("%s: epoch %d/%d %s", stage, epoch + 1, epochs, shown)
    if select is None:
        return history
    for name, module in modules.items():
        module.load_state_dict(best["modules"][name])
    log.info("%s: keeping epoch %d, the highest %s (%.4g)", stage, best["epoch"], select, best["value"])
    return [{**row, "selected": int(row["epoch"] == best["epoch"])} for row in history]


def _copy_states(modules: dict[str, nn.Module]) -> dict[str, dict[str, torch.Tensor]]:
    return {name: {k: v.detach().clone() for k, v in m.state_dict().items()} for name, m in modules.items()}
