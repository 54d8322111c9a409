"""Failures with a message written for users (the CLI prints it and exits 1, no traceback).

Torch-free, so that every job's entry point can name them without importing the
training or attack code (per-job start-up: benchmarks/startup.py).
"""

from __future__ import annotations


class DataError(RuntimeError):
    """An upstream archive is missing, cannot be downloaded, or fails its checksum; or a prepared dataset is damaged."""


class ConfigError(ValueError):
    """The workflow config is invalid; the message names the key."""


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, damaged, unsafe or from another model."""


class NonFiniteLoss(RuntimeError):
    """A loss became NaN or infinite; the last good resume state is kept."""


class FineTuneCollapse(RuntimeError):
    """Fine-tuning destroyed the defense's clean accuracy; the model is not published."""


class InjectedFault(RuntimeError):
    """A failure the fault tests asked for (environment variable ATOP_FAIL_COMMANDS)."""


# What the CLI reports as a one-line error (ValueError covers ConfigError and bad attack settings).
EXPECTED_ERRORS = (
    CheckpointError,
    DataError,
    NonFiniteLoss,
    FineTuneCollapse,
    InjectedFault,
    ValueError,
    FileNotFoundError,
)
