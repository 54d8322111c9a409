"""What produced a result: library versions, device, seeds, input hashes."""

from __future__ import annotations

import platform
import sys
from importlib import metadata

import torch

_PACKAGES = ("torch", "torchvision", "torchattacks", "numpy", "scikit-learn", "atop")


def library_versions() -> dict[str, str]:
    versions = {"python": sys.version.split()[0]}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"cpu:{platform.processor() or platform.machine()} threads={torch.get_num_threads()}"


def pick_device(requested: str) -> torch.device:
    """``auto`` takes a GPU when one is visible; an explicit ``cuda`` without one is an error."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {requested!r} was requested but no CUDA device is visible")
    return torch.device(requested)


def provenance(device: torch.device, inputs: dict[str, str] | None = None) -> dict:
    return {
        "versions": library_versions(),
        "device": device_description(device),
        "inputs_sha256": dict(inputs or {}),
    }
