"""The final phase's tail: evaluate a checkpoint against the base model and export its adapter.

Output layout (out_dir):
    adapter/          PEFT format (adapter_config.json + adapter_model.safetensors), loadable by
                      PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained(base))
    evaluation.json   val loss and token accuracy (adapter and base), greedy answers, adapter size
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from worker.recipe.checkpoint import ADAPTER_DIR, read_manifest
from worker.recipe.data import collate, to_device
from worker.recipe.lora import load_base, pick_device
from worker.recipe.metrics import MODEL_INPUTS, evaluate_samples
from worker.recipe.preprocess import IGNORE_INDEX, load_artifact

logger = logging.getLogger(__name__)

EVALUATION_FILE = "evaluation.json"
MAX_GENERATIONS = 8
MAX_NEW_TOKENS = 16


def _prompt_and_reference(sample: dict[str, Any]) -> tuple[dict[str, Any], list[int]]:
    """Cut a training sample back to the prompt that generation starts from."""
    labels = sample["labels"]
    answer = labels != IGNORE_INDEX
    start = int(answer.nonzero()[0])
    per_token = ("input_ids", "attention_mask", "labels", "mm_token_type_ids")
    prompt = {k: sample[k][:start] if k in per_token else sample[k] for k in sample}
    return prompt, labels[answer].tolist()


def _generate(
    model: Any, prompt: dict[str, Any], pad_id: int, device: Any, dtype: Any
) -> list[int]:
    import torch

    batch = to_device(collate([prompt], pad_id), device, dtype)
    with torch.no_grad():
        out = model.generate(
            **{k: batch[k] for k in MODEL_INPUTS},
            max_new_tokens=MAX_NEW_TOKENS,
            do_sample=False,
        )
    generated: list[int] = out[0, batch["input_ids"].shape[1] :].tolist()
    return generated


def _adapter_bytes(adapter_dir: Path) -> int:
    return sum(f.stat().st_size for f in adapter_dir.rglob("*") if f.is_file())


def _normalise(text: str) -> str:
    return " ".join(text.lower().split())


def evaluate_and_export(
    *,
    artifact_dir: Path,
    model_dir: str,
    checkpoint_dir: Path,
    out_dir: Path,
    base_model_name: str | None = None,
) -> dict[str, Any]:
    """Score the checkpoint's adapter and the bare base on the artifact's val samples; export.

    base_model_name, if given, is recorded in adapter_config.json in place of model_dir (which
    is often a temporary download path).
    """
    from peft import PeftModel
    from transformers import AutoProcessor

    checkpoint_dir, out_dir = Path(checkpoint_dir), Path(out_dir)
    ckpt = read_manifest(checkpoint_dir)
    manifest, samples = load_artifact(Path(artifact_dir))
    val_idx: list[int] = list(manifest["val"])
    pad_id = int(manifest["pad_token_id"])
    tokenizer = AutoProcessor.from_pretrained(model_dir).tokenizer
    device, dtype = pick_device()
    model = PeftModel.from_pretrained(
        load_base(model_dir, device, dtype), str(checkpoint_dir / ADAPTER_DIR)
    )
    model.eval()

    def score() -> tuple[float, float]:
        return evaluate_samples(
            model, samples, val_idx, pad_token_id=pad_id, device=device, dtype=dtype
        )

    val_loss, accuracy = score()
    with model.disable_adapter():
        base_loss, base_accuracy = score()

    answers = []
    for index in val_idx[:MAX_GENERATIONS]:
        prompt, reference = _prompt_and_reference(samples[index])
        tuned = _generate(model, prompt, pad_id, device, dtype)
        with model.disable_adapter():
            base = _generate(model, prompt, pad_id, device, dtype)
        answers.append(
            {
                "file": manifest["files"][index],
                "reference": tokenizer.decode(reference, skip_special_tokens=True),
                "adapter": tokenizer.decode(tuned, skip_special_tokens=True),
                "base": tokenizer.decode(base, skip_special_tokens=True),
            }
        )

    def exact_match(key: str) -> float:
        hits = [_normalise(a[key]) == _normalise(a["reference"]) for a in answers]
        return sum(hits) / max(len(hits), 1)

    adapter_dir = out_dir / ADAPTER_DIR
    if base_model_name is not None:
        model.peft_config["default"].base_model_name_or_path = base_model_name
    model.save_pretrained(str(adapter_dir), safe_serialization=True)

    evaluation: dict[str, Any] = {
        "checkpoint": {"step": ckpt["step"], "epoch": ckpt["epoch"]},
        "num_val": len(val_idx),
        "val_loss": val_loss,
        "token_accuracy": accuracy,
        "exact_match": exact_match("adapter"),
        "base": {
            "val_loss": base_loss,
            "token_accuracy": base_accuracy,
            "exact_match": exact_match("base"),
        },
        "answers": answers,
        "adapter_bytes": _adapter_bytes(adapter_dir),
        "max_new_tokens": MAX_NEW_TOKENS,
    }
    (out_dir / EVALUATION_FILE).write_text(
        json.dumps(evaluation, indent=2, ensure_ascii=False) + "\n"
    )
    logger.info(
        "evaluation: val_loss %.4f (base %.4f), token accuracy %.3f (base %.3f)",
        val_loss,
        base_loss,
        accuracy,
        base_accuracy,
    )
    return evaluation
