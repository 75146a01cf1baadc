"""The relay's plan: which phases a job has, in which order, on which pools by default, and
over which epochs each one trains."""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.hyperparameters import Hyperparameters

PHASES = ("preprocess", "warmup", "final")
DEFAULT_POOLS = {"preprocess": "t4", "warmup": "a10", "final": "a100"}


@dataclass(frozen=True)
class EpochRange:
    start: int
    end: int


def epoch_range(phase: str, hp: Hyperparameters) -> EpochRange:
    """Warmup trains [0, warmup_epochs); final trains [warmup_epochs, total_epochs)."""
    if phase == "warmup":
        return EpochRange(0, hp.warmup_epochs)
    if phase == "final":
        return EpochRange(hp.warmup_epochs, hp.total_epochs)
    return EpochRange(0, 0)


def next_phase(phase: str) -> str | None:
    index = PHASES.index(phase)
    return PHASES[index + 1] if index + 1 < len(PHASES) else None


def previous_phase(phase: str) -> str | None:
    index = PHASES.index(phase)
    return PHASES[index - 1] if index > 0 else None
