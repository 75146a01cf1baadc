"""Out-of-memory recovery: recognise an OOM and plan the next, smaller, attempt.

A step that runs out of memory is retried with half the micro-batch and as many more
micro-batches per optimizer step, so the samples per optimizer step (the effective batch) and
the loss normalisation stay the same. At micro-batch 1 gradient checkpointing is the last
resort; an OOM after that is a job that does not fit this GPU.
"""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.errors import RelaytuneError


class OutOfMemory(RelaytuneError):
    """Training did not fit in GPU memory even at micro-batch 1 with gradient checkpointing."""

    code = "out_of_memory"


def is_out_of_memory(exc: BaseException) -> bool:
    """torch.cuda.OutOfMemoryError, or any error of that type name (other backends, tests)."""
    return type(exc).__name__ == "OutOfMemoryError" or any(
        cls.__name__ == "OutOfMemoryError" for cls in type(exc).__mro__
    )


@dataclass(frozen=True)
class MemoryPlan:
    """How an optimizer step's samples are split: micro-batches of `micro_batch_size`."""

    micro_batch_size: int
    effective_batch: int  # samples per optimizer step: the job's batch_size x accumulation
    gradient_checkpointing: bool

    @property
    def accumulation(self) -> int:
        return -(-self.effective_batch // self.micro_batch_size)

    def after_oom(self) -> MemoryPlan:
        """The plan to retry with; raises OutOfMemory when nothing smaller is left."""
        if self.micro_batch_size > 1:
            return MemoryPlan(
                self.micro_batch_size // 2, self.effective_batch, self.gradient_checkpointing
            )
        if not self.gradient_checkpointing:
            return MemoryPlan(1, self.effective_batch, True)
        raise OutOfMemory(
            "out of GPU memory at micro-batch 1 with gradient checkpointing on: lower "
            "max_pixels, lora_rank or the number of tuned modules, or use a larger GPU",
            param="batch_size",
        )

    def describe(self) -> dict[str, int | bool]:
        return {
            "micro_batch_size": self.micro_batch_size,
            "gradient_accumulation": self.accumulation,
            "gradient_checkpointing": self.gradient_checkpointing,
        }
