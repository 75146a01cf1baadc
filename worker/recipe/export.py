"""Export of a trained adapter: the PEFT adapter itself and, on request, a merged model.

adapter/   adapter_config.json + adapter_model.safetensors; deploy with
           PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained(base), dir)
           or base.load_adapter(dir)
merged/    the base with the LoRA deltas folded in (merge_and_unload), plus the processor
           files, so that AutoModelForImageTextToText / AutoProcessor load it on their own
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ADAPTER_FORMAT = "peft-safetensors"
MERGED_FORMAT = "transformers-safetensors"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"


def describe_dir(directory: Path) -> dict[str, Any]:
    """{"bytes": total size, "files": relative paths, sorted} of everything under directory."""
    directory = Path(directory)
    files = sorted(p for p in directory.rglob("*") if p.is_file())
    return {
        "bytes": sum(p.stat().st_size for p in files),
        "files": [p.relative_to(directory).as_posix() for p in files],
    }


def save_adapter(
    model: Any, adapter_dir: Path, base_model_name: str | None = None
) -> dict[str, Any]:
    """Write the PeftModel's active adapter in PEFT format; return its size and files.

    base_model_name, if given, replaces the base path recorded in adapter_config.json and the
    model card: the worker loads the base from a local download directory that means nothing
    to the user.
    """
    adapter_dir = Path(adapter_dir)
    model.save_pretrained(str(adapter_dir), safe_serialization=True)
    if not (adapter_dir / ADAPTER_WEIGHTS).is_file():
        raise RuntimeError(f"peft wrote no {ADAPTER_WEIGHTS} into {adapter_dir}")
    if base_model_name is not None:
        # Renamed after saving, not before: save_pretrained compares the vocabulary with the
        # base's config.json, which for a hub id means a network lookup the worker must not make.
        _rename_base(adapter_dir, base_model_name)
    return {**describe_dir(adapter_dir), "format": ADAPTER_FORMAT}


def _rename_base(adapter_dir: Path, base_model_name: str) -> None:
    """Record base_model_name in adapter_config.json and in the model card peft writes."""
    config_path = adapter_dir / ADAPTER_CONFIG
    config = json.loads(config_path.read_text(encoding="utf-8"))
    local_path = config["base_model_name_or_path"]
    config["base_model_name_or_path"] = base_model_name
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    card = adapter_dir / "README.md"
    if local_path and card.is_file():
        text = card.read_text(encoding="utf-8")
        card.write_text(text.replace(local_path, base_model_name), encoding="utf-8")


def save_merged(model: Any, model_dir: str, merged_dir: Path) -> dict[str, Any]:
    """Fold the adapter into the base weights and save a standalone model with its processor.

    merge_and_unload works in place: `model` is spent afterwards, so call this last. Merging
    the model already in memory, rather than loading the base a second time, keeps the peak
    memory at one copy of the base. The weights keep the dtype the model was loaded in.
    """
    from transformers import AutoProcessor

    merged_dir = Path(merged_dir)
    merged = model.merge_and_unload()
    merged.save_pretrained(str(merged_dir), safe_serialization=True)
    # The processor (tokenizer, chat template, image and video processors) makes the folder
    # usable without the base model's directory.
    AutoProcessor.from_pretrained(model_dir).save_pretrained(str(merged_dir))
    dtype = str(next(merged.parameters()).dtype).removeprefix("torch.")
    return {**describe_dir(merged_dir), "format": MERGED_FORMAT, "dtype": dtype}
