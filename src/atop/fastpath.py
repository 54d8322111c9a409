"""Speed settings for GPUs (config ``performance:``), resolved and applied in one place.

Training may trade exactness for speed where accuracy is unaffected:
channels_last memory layout, TF32 tensor-core arithmetic, bf16 autocast and
``torch.compile``. Evaluation keeps fp32 inputs and gradients; TF32 follows
PyTorch's own convolution default there, and bf16 autocast is opt-in. Every
result and checkpoint records the settings it ran with (``record()``), so a
faster mode is always labelled.

``auto`` means "on a CUDA device, off elsewhere": on a CPU none of these pays
(channels_last was measured slower on the digits default, TF32 does not exist).
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass

import torch
from torch import nn

PHASES = ("training", "evaluation")  # the config's performance.<phase>
# The schema's defaults, repeated for callers that pass no config (tests, benchmarks).
DEFAULTS = {
    "training": {"channels_last": "auto", "tf32": "auto", "autocast": "none", "compile": False},
    "evaluation": {"channels_last": "auto", "tf32": "auto", "autocast": "none", "compile": False},
}
AUTOCAST_DTYPES = {"bf16": torch.bfloat16}


@dataclass(frozen=True)
class FastPath:
    channels_last: bool = False
    tf32: bool = False
    autocast: str = "none"
    compile: bool = False

    @classmethod
    def resolve(cls, performance: dict | None, phase: str, device: torch.device) -> FastPath:
        """The settings of ``phase`` (training or evaluation) on ``device``, ``auto`` decided."""
        if phase not in PHASES:
            raise ValueError(f"performance phase {phase!r}: expected one of {', '.join(PHASES)}")
        settings = {**DEFAULTS[phase], **((performance or {}).get(phase) or {})}
        unknown = set(settings) - set(DEFAULTS[phase])
        if unknown:
            raise ValueError(f"performance.{phase}: unknown setting(s) {', '.join(sorted(unknown))}")
        if settings["autocast"] not in ("none", *AUTOCAST_DTYPES):
            raise ValueError(
                f"performance.{phase}.autocast: {settings['autocast']!r}, expected none or {', '.join(AUTOCAST_DTYPES)}"
            )
        on_cuda = torch.device(device).type == "cuda"

        def decide(value) -> bool:
            return on_cuda if value == "auto" else bool(value)

        return cls(
            channels_last=decide(settings["channels_last"]),
            tf32=decide(settings["tf32"]) and on_cuda,
            autocast=settings["autocast"],
            compile=bool(settings["compile"]),
        )

    def apply_backends(self) -> None:
        """Set the process-wide TF32 switches (matmuls and cuDNN convolutions) to this path's choice."""
        torch.backends.cuda.matmul.allow_tf32 = self.tf32
        torch.backends.cudnn.allow_tf32 = self.tf32

    def prepare(self, module: nn.Module) -> nn.Module:
        """Lay the module's weights out for this path (in place); returns it."""
        if self.channels_last:
            module.to(memory_format=torch.channels_last)
        return module

    def runner(self, module: nn.Module) -> nn.Module:
        """What forward passes call: the compiled module (sharing its parameters) or the module itself.

        Save and load state through the original module: a compiled one prefixes its keys.
        """
        return torch.compile(module) if self.compile else module

    def compiled(self, function):
        """``function`` (a bound method such as ``forward_train``) compiled, or unchanged."""
        return torch.compile(function) if self.compile else function

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def mixed_precision(self, device: torch.device):
        """Mixed-precision context for forward passes (losses stay fp32 under autocast's rules)."""
        if self.autocast == "none":
            return contextlib.nullcontext()
        return torch.autocast(torch.device(device).type, dtype=AUTOCAST_DTYPES[self.autocast])

    @property
    def precision(self) -> str:
        """The arithmetic in one word, as results and reports label it."""
        if self.autocast != "none":
            return f"{self.autocast}-autocast"
        return "tf32" if self.tf32 else "fp32"

    def record(self) -> dict:
        return {**asdict(self), "precision": self.precision}
