"""Import the training libraries once in the worker's parent, before it forks a child per phase.

Every phase runs in a fresh child (`worker_max_tasks_per_child=1`); without this each child
would import torch, transformers, the Qwen3-VL classes and peft from scratch, which costs
seconds to tens of seconds per phase. A forked child shares the parent's loaded modules.

Importing is all that happens here: no tensor is made and CUDA is never initialised, so the
children stay fork-safe (a CUDA context cannot survive a fork). Nothing runs torch ops either,
so no OpenMP thread pool exists in the parent when it forks.
"""

from __future__ import annotations

import gc
import importlib
import logging
import time
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)

MODULES = (
    "torch",
    "torchvision.transforms.v2",
    "transformers",
    "peft",
    "safetensors.torch",
    "worker.recipe.preprocess",
    "worker.recipe.augment",
    "worker.recipe.train",
    "worker.recipe.evaluate",
)
# Resolved through transformers' lazy namespace, which imports the module behind each name:
# the classes that AutoProcessor / AutoModelForImageTextToText pick for a Qwen3-VL checkpoint.
TRANSFORMERS_NAMES = (
    "AutoProcessor",
    "AutoModelForImageTextToText",
    "Qwen3VLForConditionalGeneration",
    "Qwen3VLProcessor",
    "Qwen2VLImageProcessor",
    "Qwen3VLVideoProcessor",
    "Qwen2TokenizerFast",
)


@dataclass
class PreloadReport:
    seconds: float = 0.0
    loaded: list[str] = field(default_factory=list)
    missing: dict[str, str] = field(default_factory=dict)


def preload() -> PreloadReport:
    """Import MODULES and TRANSFORMERS_NAMES; a name this library version lacks is skipped
    (the child then imports whatever it needs itself, as it would without preloading)."""
    report = PreloadReport()
    started = time.perf_counter()
    for module in MODULES:
        try:
            importlib.import_module(module)
            report.loaded.append(module)
        except ImportError as exc:
            report.missing[module] = str(exc)
    if "transformers" in report.loaded:
        transformers = importlib.import_module("transformers")
        for name in TRANSFORMERS_NAMES:
            try:
                getattr(transformers, name)
                report.loaded.append(f"transformers.{name}")
            except (AttributeError, ImportError) as exc:
                report.missing[f"transformers.{name}"] = str(exc)
    report.seconds = time.perf_counter() - started
    logger.info(
        "preloaded %d modules in %.1fs before forking: %s",
        len(report.loaded),
        report.seconds,
        ", ".join(report.loaded),
    )
    if report.missing:
        logger.warning("not preloaded (the phase imports them itself): %s", report.missing)
    return report


def freeze_heap() -> int:
    """Move every object the parent holds now into the collector's permanent generation, just
    before the pool forks its first child; returns how many objects that is.

    Celery runs a full gc.collect() in the parent before it forks each replacement child (one
    per phase). Over the preloaded libraries' half a million objects that pass alone took 1 to
    1.6 s per phase, while the pool had no child to take the next phase. Frozen objects are
    skipped by that pass and by the children's collections, which also spares the children
    from copying the parent's pages just to update the collector's counts (the reason the
    Python docs give for freezing before fork). What is frozen is the parent's loaded code and
    settings, alive for its whole life anyway; garbage is collected once first so that none
    of it is kept. Objects made later, in the parent or in a child, are collected as usual."""
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    logger.info("froze %d objects of the worker's parent before forking", frozen)
    return frozen
