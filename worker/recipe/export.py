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


MODEL_CARD = "README.md"
CARD_TAGS = ("relaytune", "lora", "image-text-to-text")


def relaytune_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("relaytune")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def _cell(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")


def model_card(
    *,
    base_model: str,
    dataset: dict[str, Any],
    hyperparameters: dict[str, Any],
    evaluation: dict[str, Any],
) -> str:
    """The adapter's model card: Hugging Face style YAML front matter, then its provenance.

    dataset: {"id", "name", "num_samples", "train_samples", "val_samples"}; absent or None
    entries are left out.
    evaluation: the final phase's report ("num_samples", "base", "adapter", "delta").
    """
    # JSON strings are valid YAML scalars: a name with ':' or quotes stays one value.
    front = ["---", f"base_model: {json.dumps(base_model)}", "library_name: peft", "tags:"]
    front += [f"- {tag}" for tag in CARD_TAGS]
    lines = [*front, "---", "", f"# LoRA adapter for {base_model}", ""]
    lines += [
        f"Fine-tuned with relaytune {relaytune_version()}. Load it on top of the base model "
        f"`{base_model}` (see “Serving the adapter” in relaytune's README).",
        "",
        "## Data set",
        "",
    ]
    labels = {
        "id": "Id",
        "name": "Name",
        "num_samples": "Samples",
        "train_samples": "Training samples",
        "val_samples": "Validation samples",
    }
    shown = [(label, dataset.get(key)) for key, label in labels.items()]
    lines += [f"- {label}: {_cell(value)}" for label, value in shown if value is not None]
    lines += ["", "## Hyperparameters", "", "```json"]
    lines += [json.dumps(hyperparameters, indent=2, sort_keys=True), "```", ""]
    lines += [
        "## Evaluation",
        "",
        f"On {evaluation['num_samples']} held-out samples, greedy decoding; "
        "before = the base model, after = base + this adapter.",
        "",
        "| metric | before | after | change |",
        "|---|---|---|---|",
    ]
    for metric, before in evaluation["base"].items():
        after, change = evaluation["adapter"].get(metric), evaluation["delta"].get(metric)
        lines.append(f"| {metric} | {_cell(before)} | {_cell(after)} | {_cell(change)} |")
    return "\n".join(lines) + "\n"


def write_model_card(adapter_dir: Path, **card: Any) -> Path:
    """Replace peft's generic card in adapter_dir with relaytune's (see model_card)."""
    path = Path(adapter_dir) / MODEL_CARD
    path.write_text(model_card(**card), encoding="utf-8")
    return path
