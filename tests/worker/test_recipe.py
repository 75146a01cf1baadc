"""The recipe on the tiny model: artifact labels and capping, a trained checkpoint's export.

Training, resume, LoRA targets and OOM recovery have their own files (test_train.py,
test_resume.py, test_lora_targets.py, test_oom.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.worker.conftest import QUESTION
from worker.recipe.data import IGNORE_INDEX
from worker.recipe.preprocess import load_artifact


def test_artifact_trains_only_on_answer_tokens(
    artifact_dir: Path, dataset_dir: Path, tiny_model_dir: str
) -> None:
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    image_id = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    manifest, samples = load_artifact(artifact_dir)
    annotations = json.loads((dataset_dir / "annotations.json").read_text())

    assert manifest["files"] == sorted(annotations) and manifest["num_samples"] == 6
    assert len(manifest["val"]) == 1
    assert sorted(manifest["train"] + manifest["val"]) == list(range(6))
    for name, sample in zip(manifest["files"], samples, strict=True):
        labels = sample["labels"]
        unmasked = (labels != IGNORE_INDEX).nonzero().flatten()
        # One contiguous run of label tokens, equal to the inputs there.
        assert unmasked.tolist() == list(range(int(unmasked[0]), int(unmasked[-1]) + 1))
        assert labels[unmasked].equal(sample["input_ids"][unmasked])
        decoded = processor.tokenizer.decode(labels[unmasked])
        assert decoded == annotations[name]["answer"] + "<|im_end|>"
        grid = sample["image_grid_thw"]
        assert int((sample["input_ids"] == image_id).sum()) == int(grid.prod()) // 4
        assert sample["pixel_values"].shape[0] == int(grid.prod())
        assert sample["mm_token_type_ids"].sum() == (sample["input_ids"] == image_id).sum()


def test_trained_checkpoint_exports_a_plain_peft_adapter(
    full_run: tuple[Any, Any],
    train_artifact_dir: Path,
    tiny_model_dir: str,
    tmp_path: Path,
) -> None:
    import torch
    from peft import PeftModel
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from worker.recipe.evaluate import evaluate_and_export

    # The report's schema is test_evaluate.py's; here: a trained checkpoint exports an adapter
    # that plain peft loads and generates with.
    evaluate_and_export(
        artifact_dir=train_artifact_dir,
        model_dir=tiny_model_dir,
        checkpoint_dir=full_run[0].checkpoint_dir,
        out_dir=tmp_path,
    )
    adapter_dir = tmp_path / "adapter"
    assert {p.name for p in adapter_dir.iterdir()} >= {
        "adapter_config.json",
        "adapter_model.safetensors",
    }

    base = AutoModelForImageTextToText.from_pretrained(tiny_model_dir)
    model = PeftModel.from_pretrained(base, str(adapter_dir))
    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}
    ]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    inputs = processor(
        text=[prompt], images=[Image.new("RGB", (64, 64), "white")], return_tensors="pt"
    )
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert out.shape[1] > inputs["input_ids"].shape[1]
