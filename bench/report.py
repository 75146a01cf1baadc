"""What a bench run records and prints: environment, results file, summary line, table.
Torch is imported only where a GPU environment is described: the CPU benches use the rest."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


def machine() -> dict[str, Any]:
    """The CPUs and Python a CPU bench ran on."""
    return {
        "cpus": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def environment(device: torch.device) -> dict[str, Any]:
    import peft
    import torch
    import transformers

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    return {
        "device_name": name or "cpu",
        "device_type": device.type,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "python": platform.python_version(),
        "date": dt.date.today().isoformat(),
    }


def results_name(device_name: str, date: str) -> str:
    """bench/results/<device-name>-<date>.json, e.g. nvidia-h200-2026-11-28.json."""
    slug = re.sub(r"[^a-z0-9]+", "-", device_name.lower()).strip("-") or "unknown"
    return f"{slug}-{date}.json"


def write(path: Path | None, result: dict[str, Any]) -> None:
    """The results file, whole or not at all (written aside, then renamed)."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(path)


def summary_line(device_name: str, run: dict[str, Any]) -> str:
    if "error" in run:
        return f"  {run['preset']} mb={run['micro_batch']} {run['lora']}: {run['error']}"
    return (
        f"  {run['preset']} mb={run['micro_batch']} lora={run['lora_targets']} "
        f"ckpt={run['gradient_checkpointing']}: {run['samples_per_s']:.2f} samples/s, "
        f"{run['step_time_s_median'] * 1e3:.1f} ms/step, peak {run['peak_memory_gib']} GiB, "
        f"mfu {run['mfu']}"
    )


def table(result: dict[str, Any]) -> str:
    def fmt(x: float | None, spec: str) -> str:
        return "-" if x is None else format(x, spec)

    name = result["environment"]["device_name"]
    rows = [
        "| device | preset | LoRA | grad ckpt | micro-batch | samples/s | tokens/s | "
        "step ms | peak GiB | MFU |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in result["runs"]:
        if "error" in r:
            rows.append(
                f"| {name} | {r['preset']} | {r['lora']} | {r['grad_ckpt']} | {r['micro_batch']} "
                f"| {r['error'][:40]} | | | | |"
            )
            continue
        mfu = "-" if r["mfu"] is None else f"{100 * r['mfu']:.1f}%"
        rows.append(
            f"| {name} | {r['preset']} | {r['lora_targets']} | "
            f"{'on' if r['gradient_checkpointing'] else 'off'} | {r['micro_batch']} | "
            f"{r['samples_per_s']:.2f} | {r['tokens_per_s']:.0f} | "
            f"{r['step_time_s_median'] * 1e3:.1f} | {fmt(r['peak_memory_gib'], '.2f')} | {mfu} |"
        )
    return "\n".join(rows)
