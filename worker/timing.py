"""Where a run's time goes, measured in the worker from claim to release.

Every second belongs to at most one component: a measurement nested in another (a checkpoint
upload inside the training loop) pauses the outer one, so the components never overlap and
their sum stays within the billed interval. What no measurement covers becomes `other_s` in
the job store.
"""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace

from orchestrator.timings import COMPONENTS, RunTiming


@dataclass
class _Span:
    component: str
    since: float  # when it started or last resumed


class PhaseClock:
    """Seconds per component (see orchestrator.timings.COMPONENTS) and the run's counters."""

    def __init__(self, now: Callable[[], float] = time.monotonic) -> None:
        self._now = now
        self.seconds = dict.fromkeys(COMPONENTS, 0.0)
        self._running: list[_Span] = []  # innermost last
        self.facts = RunTiming()

    def _credit_innermost(self, now: float) -> None:
        if self._running:
            span = self._running[-1]
            self.seconds[span.component] += now - span.since

    @contextmanager
    def measure(self, component: str) -> Iterator[None]:
        if component not in self.seconds:
            raise ValueError(f"unknown timing component {component!r}; one of {COMPONENTS}")
        now = self._now()
        self._credit_innermost(now)
        self._running.append(_Span(component, now))
        try:
            yield
        finally:
            now = self._now()
            self._credit_innermost(now)
            self._running.pop()
            if self._running:
                self._running[-1].since = now  # the outer component resumes

    def switch(self, component: str) -> None:
        """From now on the innermost measurement counts as `component`: for work whose parts
        happen inside one call (the model load, then the loop, inside train_epochs)."""
        if component not in self.seconds:
            raise ValueError(f"unknown timing component {component!r}; one of {COMPONENTS}")
        if not self._running:
            raise RuntimeError("switch needs a measurement in progress")
        now = self._now()
        self._credit_innermost(now)
        self._running[-1] = _Span(component, now)

    def count(
        self,
        *,
        samples: int = 0,
        tokens: int = 0,
        validation_samples: int = 0,
        checkpoints: int = 0,
        input_bytes: int = 0,
    ) -> None:
        f = self.facts
        f.samples += samples
        f.tokens += tokens
        f.validation_samples += validation_samples
        f.checkpoints += checkpoints
        f.input_bytes += input_bytes

    def note(
        self,
        *,
        precision: str | None = None,
        device: str | None = None,
        micro_batch: int | None = None,
        lora_targets: str | None = None,
        model_key: str | None = None,
        model_cache_hit: bool | None = None,
    ) -> None:
        """Record what the run ran with; arguments left out keep what was noted before."""
        f = self.facts
        if model_cache_hit is not None:
            f.model_cache_hit = model_cache_hit
        f.precision = precision or f.precision
        f.device = device or f.device
        f.micro_batch = micro_batch or f.micro_batch
        f.lora_targets = lora_targets or f.lora_targets
        f.model_key = model_key or f.model_key

    def timing(self) -> RunTiming:
        """The run's figures so far, with the process's peak memory and device."""
        device, peak = device_and_peak_memory()
        s = self.seconds
        return replace(
            self.facts,
            device=self.facts.device or device,
            peak_memory_bytes=peak,
            startup_s=s["startup"],
            model_fetch_s=s["model_fetch"],
            input_download_s=s["input_download"],
            train_s=s["train"],
            evaluate_s=s["evaluate"],
            export_s=s["export"],
            checkpoint_upload_s=s["checkpoint_upload"],
        )


def device_and_peak_memory() -> tuple[str, int]:
    """The CUDA device's name and its peak allocated bytes when this process used CUDA, else
    "cpu" and the process's peak resident memory."""
    torch = sys.modules.get("torch")  # never import torch (and start CUDA) just to ask
    if torch is not None and torch.cuda.is_initialized():
        return torch.cuda.get_device_name(), int(torch.cuda.max_memory_allocated())
    # Linux reports ru_maxrss in KiB (macOS in bytes; workers run on Linux).
    return "cpu", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def lora_targets_label(target_modules: list[str] | str) -> str:
    """ "q_proj,v_proj" (sorted) or "all-linear": how profiles group runs by LoRA targets."""
    if isinstance(target_modules, str):
        return target_modules
    return ",".join(sorted(target_modules))[:64]
