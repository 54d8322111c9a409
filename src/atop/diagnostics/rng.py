"""Borrowed randomness for diagnostics that run inside training or beside it: every RNG handed back."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


@contextlib.contextmanager
def preserved_modes(model: nn.Module) -> Iterator[None]:
    """Hand every module's train/eval flag back as found (a purifier in train mode inside an eval-mode
    defense stays in train mode)."""
    modes = [(module, module.training) for module in model.modules()]
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


@contextlib.contextmanager
def preserved_rng(model: nn.Module) -> Iterator[None]:
    """Run the body on borrowed randomness: torch's CPU RNG, every CUDA device's, and every RT's seed and generator state."""
    transforms = [m for m in model.modules() if hasattr(m, "reseed") and hasattr(m, "_generator")]
    saved = [(t.seed, t._generator, None if t._generator is None else t._generator.get_state()) for t in transforms]
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []  # every device's RNG
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            for t, (seed, generator, state) in zip(transforms, saved):
                t.seed, t._generator = seed, generator
                if generator is not None:
                    generator.set_state(state)


def reseed(model: nn.Module, seed: int) -> None:
    if hasattr(model, "reseed"):
        model.reseed(seed)
