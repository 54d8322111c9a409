"""Atomic file output, hashing and checkpoints.

Every file the workflow publishes is written to a temporary sibling and
renamed into place, so a killed job never leaves a half-written result that
looks complete. Checkpoints are a state dict plus a small metadata dict and
are always loaded with ``weights_only=True``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import CheckpointError

if TYPE_CHECKING:
    import torch


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def staged_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty staging folder next to ``path``; on success it replaces ``path`` whole.

    For outputs made of many files (the report): a reader sees the previous
    complete folder or the new complete one, never a mix. A kill between the
    two renames leaves no folder at ``path`` (so nothing looks complete) and a
    hidden staging or old sibling that the next call removes.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(f".{target.name}.staging-*"):
        shutil.rmtree(stale, ignore_errors=True)
    for stale in target.parent.glob(f".{target.name}.old-*"):
        shutil.rmtree(stale, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.staging-", dir=target.parent))
    try:
        yield staging
        old = None
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.replace(target, old / target.name)
        os.replace(staging, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text())


# A job hashes its inputs several times (manifest check, same-data check, provenance):
# remember each file's digest while its size and modification time stay the same.
_DIGESTS: dict[tuple[str, int, int], str] = {}


def sha256_file(path: str | os.PathLike) -> str:
    stat = os.stat(path)
    key = (os.path.realpath(path), stat.st_size, stat.st_mtime_ns)
    if key not in _DIGESTS:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        _DIGESTS[key] = digest.hexdigest()
    return _DIGESTS[key]


def sha256_tensor(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


def save_checkpoint(path: str | os.PathLike, state_dict: dict, meta: dict) -> None:
    import torch  # lazily: jobs that only read JSON (report, checks) never load torch

    with atomic_path(path) as tmp:
        torch.save({"state_dict": state_dict, "meta": meta}, tmp)


def _unloadable(path: Path, what: str, error: Exception) -> CheckpointError:
    """A checkpoint torch cannot read, named with its size and what to do (torch's own reason may be empty)."""
    size = path.stat().st_size
    if size == 0:
        return CheckpointError(
            f"{what} {path} is empty (0 bytes): a killed job or a full disk left it; delete it and rerun "
            "the rule that makes it"
        )
    reason = str(error).strip().splitlines()[0] if str(error).strip() else "no detail"
    if "Weights only load failed" in str(error):
        return CheckpointError(
            f"{what} {path} holds Python objects besides tensors and plain data, refused (weights_only): {reason}"
        )
    return CheckpointError(
        f"{what} {path} ({size} bytes) cannot be loaded, it is truncated or damaged "
        f"({type(error).__name__}: {reason}); delete it and rerun the rule that makes it"
    )


def load_checkpoint(path: str | os.PathLike, expect_kind: str | None = None) -> tuple[dict, dict]:
    """Return ``(state_dict, meta)``; refuse anything that is not plain tensors and data."""
    import torch  # lazily: jobs that only read JSON (report, checks) never load torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for damaged or unsafe files
        raise _unloadable(path, "checkpoint", error) from error
    if not isinstance(payload, dict) or not {"state_dict", "meta"} <= payload.keys():
        raise CheckpointError(f"{path} is not an atop checkpoint (needs 'state_dict' and 'meta')")
    meta = payload["meta"]
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path} has metadata of type {type(meta).__name__}, expected a dict")
    if expect_kind is not None and meta.get("kind") != expect_kind:
        raise CheckpointError(f"{path} holds a {meta.get('kind')!r} checkpoint, expected {expect_kind!r}")
    return payload["state_dict"], meta


def require_same_data(meta: dict, data_path: str | os.PathLike, data_sha: str, checkpoint_path) -> None:
    """Refuse a checkpoint trained on another prepared dataset (another experiment, or a stale run)."""
    trained_on = meta.get("provenance", {}).get("inputs_sha256", {}).get("data")
    if trained_on is not None and trained_on != data_sha:
        raise CheckpointError(
            f"{checkpoint_path} was trained on another dataset file (sha256 {trained_on[:12]}...) than "
            f"{data_path} (sha256 {data_sha[:12]}...): it belongs to another experiment or an outdated run; "
            "rerun the rule that trains it"
        )


def load_external_state_dict(path: str | os.PathLike, sha256: str | None, what: str) -> dict:
    """A user-provided weights file: present, matching its configured sha256, a plain state dict."""
    import torch  # lazily: jobs that only read JSON (report, checks) never load torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} {path} does not exist")
    if sha256 is not None:
        actual = sha256_file(path)
        if actual != sha256:
            raise CheckpointError(f"{path} has sha256 {actual}, but the config names {sha256}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for damaged or unsafe files
        raise _unloadable(path, what, error) from error
    state = payload.get("state_dict", payload) if isinstance(payload, dict) else None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} is not a state dict")
    return state
