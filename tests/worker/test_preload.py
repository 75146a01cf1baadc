"""The worker's parent preloads the training libraries without touching CUDA, and a child
forked from it works with them. Each check runs in a fresh interpreter: this test process has
imported torch long ago, so only a new one shows what preloading does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

PRELOAD_THEN_FORK = """
import json, multiprocessing, sys
from worker.preload import preload

report = preload()
import torch

def child(model_dir, queue):
    from transformers import AutoProcessor
    processor = AutoProcessor.from_pretrained(model_dir)
    product = torch.ones(4, 4) @ torch.ones(4, 4)
    queue.put({"sum": float(product.sum()), "cuda": torch.cuda.is_initialized(),
               "processor": type(processor).__name__})

context = multiprocessing.get_context("fork")
queue = context.Queue()
process = context.Process(target=child, args=(sys.argv[1], queue))
process.start()
result = queue.get(timeout=120)
process.join(timeout=60)
print(json.dumps({"parent_cuda": torch.cuda.is_initialized(), "loaded": report.loaded,
                  "missing": report.missing, "child": result, "exitcode": process.exitcode}))
"""

SIGNAL_THEN_REPORT = """
import json, sys
from celery import signals
from worker.celery_app import app

signals.celeryd_after_setup.send(sender="test@host", instance=None, conf=app.conf)
print(json.dumps({"torch": "torch" in sys.modules, "peft": "peft" in sys.modules}))
"""

# A garbage cycle made before the setup, and what the collector still scans after it.
SIGNAL_THEN_COUNT = """
import gc, json, weakref
from celery import signals
from worker.celery_app import app

class Node:
    pass

cycle = Node()
cycle.self = cycle
dead = weakref.ref(cycle)
gc.disable()  # only the setup may collect it
del cycle
signals.celeryd_after_setup.send(sender="test@host", instance=None, conf=app.conf)
print(json.dumps({"frozen": gc.get_freeze_count(), "scanned": len(gc.get_objects()),
                  "garbage_kept": dead() is not None}))
"""


def _run(script: str, *args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-c", script, *args],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def test_preload_leaves_cuda_alone_and_a_forked_child_uses_the_libraries(
    tiny_model_dir: str,
) -> None:
    result = _run(PRELOAD_THEN_FORK, tiny_model_dir)

    assert result["parent_cuda"] is False
    assert result["missing"] == {}
    for name in (
        "torch",
        "peft",
        "transformers.Qwen3VLForConditionalGeneration",
        "transformers.Qwen3VLProcessor",
        "worker.recipe.train",
    ):
        assert name in result["loaded"]
    assert result["child"] == {"sum": 64.0, "cuda": False, "processor": "Qwen3VLProcessor"}
    assert result["exitcode"] == 0


def test_worker_setup_preloads_unless_the_setting_turns_it_off() -> None:
    assert _run(SIGNAL_THEN_REPORT, env={"RELAYTUNE_WORKER_PRELOAD": "true"}) == {
        "torch": True,
        "peft": True,
    }
    assert _run(SIGNAL_THEN_REPORT, env={"RELAYTUNE_WORKER_PRELOAD": "false"}) == {
        "torch": False,
        "peft": False,
    }


def test_worker_setup_freezes_what_the_parent_holds_before_forking() -> None:
    # Celery collects garbage in the parent before forking each child; frozen objects are
    # skipped, so that pass no longer walks the preloaded libraries once per phase.
    for preload in ("true", "false"):
        result = _run(SIGNAL_THEN_COUNT, env={"RELAYTUNE_WORKER_PRELOAD": preload})
        assert result["frozen"] > 10 * result["scanned"]
        assert result["garbage_kept"] is False  # collected first, never frozen
