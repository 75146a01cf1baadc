"""Which numeric precision training and evaluation run in, and the device facts that decide
it: `resolve_precision` is the one place that chooses, for both.

- bf16: on a GPU that supports it (A10, A100, H100). The base model is stored in bf16.
- fp16: on a CUDA GPU without bf16 (T4-class), with a GradScaler: fp16 gradients underflow
  without loss scaling.
- fp32: on the CPU.

In bf16 and fp16 only the frozen base is stored in low precision; the trainable parameters stay
fp32 (the optimizer's master copy) and the forward runs under autocast, which also lets an fp32
`modules_to_save` copy take low-precision activations.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from orchestrator.errors import RelaytuneError

if TYPE_CHECKING:
    import torch

PRECISIONS = ("auto", "bf16", "fp16", "fp32")


class PrecisionUnsupported(RelaytuneError):
    """The job asked for a precision this machine cannot train in."""

    status_code = 422
    code = "precision_unsupported"


@dataclass(frozen=True)
class DeviceFacts:
    cuda: bool
    bf16: bool
    name: str


@dataclass(frozen=True)
class Precision:
    name: str  # "bf16", "fp16" or "fp32"
    device: torch.device
    dtype: torch.dtype  # of the frozen base model and the batch's pixel values

    @property
    def needs_scaler(self) -> bool:
        return self.name == "fp16"

    def autocast(self) -> AbstractContextManager[Any]:
        import torch

        return torch.autocast(
            self.device.type, dtype=self.dtype, enabled=self.name in ("bf16", "fp16")
        )

    def grad_scaler(self) -> Any:
        """A GradScaler for fp16, else None."""
        import torch

        return torch.amp.GradScaler(self.device.type) if self.needs_scaler else None


def device_facts() -> DeviceFacts:
    import torch

    if not torch.cuda.is_available():
        return DeviceFacts(cuda=False, bf16=False, name="cpu")
    return DeviceFacts(
        cuda=True, bf16=torch.cuda.is_bf16_supported(), name=torch.cuda.get_device_name()
    )


def choose_precision(request: str, facts: DeviceFacts) -> str:
    """The precision to train in: 'auto' picks the best the device does; an explicit request
    the device cannot do is refused rather than silently changed."""
    if request not in PRECISIONS:
        raise PrecisionUnsupported(f"unknown precision {request!r}", param="precision")
    if request == "auto":
        if not facts.cuda:
            return "fp32"
        return "bf16" if facts.bf16 else "fp16"
    if request == "fp32":
        return "fp32"
    if not facts.cuda:
        raise PrecisionUnsupported(
            f"precision {request!r} needs a CUDA GPU; this worker has none (use 'auto' or 'fp32')",
            param="precision",
        )
    if request == "bf16" and not facts.bf16:
        raise PrecisionUnsupported(
            f"precision 'bf16' is not supported by {facts.name} (use 'auto' or 'fp16')",
            param="precision",
        )
    return request


def resolve_precision(request: str) -> Precision:
    """The device, dtype and autocast for the job's `precision` hyperparameter on this
    machine."""
    import torch

    facts = device_facts()
    name = choose_precision(request, facts)
    dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
    device = torch.device("cuda" if facts.cuda else "cpu")
    return Precision(name=name, device=device, dtype=dtypes[name])
