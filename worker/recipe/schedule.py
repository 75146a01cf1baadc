"""The learning-rate schedule: a linear ramp over the first steps, then cosine to zero.

It spans the whole job's optimizer steps, not one phase's, so a warmup phase and the final
phase that resumes it follow one curve.
"""

from __future__ import annotations

import math
from collections.abc import Callable


def warmup_cosine(warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """LR factor for optimizer step s (0-based): linear ramp, then cosine to zero."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return factor


def lr_warmup_steps(ratio: float, total_steps: int) -> int:
    """Optimizer steps of linear LR ramp: a share of the whole job's steps (not of a phase's),
    at least one unless the ratio is 0."""
    return max(1, round(ratio * total_steps)) if ratio > 0 else 0
