"""Borrowed randomness for diagnostics that run inside training or beside it: every RNG handed back."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


@contextlib.contextmanager
def preserved_rng(model: nn.Module) -> Iterator[None]:
    """Run the body on borrowed randomness: torch's global RNGs and every RT's seed and generator state."""
    transforms = [m for m in model.modules() if hasattr(m, "reseed") and hasattr(m, "_generator")]
    saved = [(t.seed, t._generator, None if t._generator is None else t._generator.get_state()) for t in transforms]
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
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
