"""What the training commands share: their argument block, their start (device, data, resume state, fast
path), checkpoint metadata, and publishing the checkpoint, curve and resume state in order."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._common import add_spec, fast_path, setup


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """Train from the prepared data alone: the spec, the data, the checkpoint and curve written."""
    add_spec(parser)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out-checkpoint", type=Path, required=True)
    parser.add_argument("--out-curve", type=Path, required=True)


def resume_path(checkpoint: Path) -> Path:
    """Where training keeps its resume state beside the checkpoint it will write."""
    return Path(str(checkpoint) + ".resume")


def start(args, spec: dict | None = None):
    """A training command's device, prepared data, resume-state path and training fast path."""
    from ..data import load_prepared

    device = setup(args.spec)
    data = load_prepared(args.data)
    return device, data, resume_path(args.out_checkpoint), fast_path(spec or args.spec, "training", device)


def publish(args, module, meta: dict, history, resume: Path | None) -> None:
    """The checkpoint, then the curve; the resume state goes last (a crash before then resumes, not restarts)."""
    from ..io import save_checkpoint

    save_checkpoint(args.out_checkpoint, module.state_dict(), meta)
    write_curve(args.out_curve, history)
    if resume is not None:
        resume.unlink(missing_ok=True)


def checkpoint_meta(kind: str, stage: str, spec: dict, device, inputs: dict, **extra) -> dict:
    from ..io import sha256_file
    from ..provenance import provenance

    return {
        "kind": kind,
        "stage": stage,
        "seed": spec.get("seed", 0),
        "spec": spec,
        "provenance": provenance(device, {name: sha256_file(path) for name, path in inputs.items()}),
        **extra,
    }


def write_curve(path, history) -> None:
    import pandas as pd

    from ..io import atomic_path

    with atomic_path(path) as tmp:
        pd.DataFrame(history).to_csv(tmp, index=False)
