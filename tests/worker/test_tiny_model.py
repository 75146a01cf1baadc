"""The tiny Qwen3-VL checkpoint loads through the real Auto classes and generates."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from worker.tiny_model import COMPLETE_MARKER, write_tiny_model


def test_round_trips_and_generates(tiny_model_dir: str) -> None:
    import torch
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir)
    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    assert type(model).__name__ == "Qwen3VLForConditionalGeneration"
    assert type(processor).__name__ == "Qwen3VLProcessor"
    assert len(processor.tokenizer) == model.config.text_config.vocab_size

    messages = [
        {
            "role": "user",
            "content": [
                {"type": "image"},
                {"type": "text", "text": "Which corner is the defect in?"},
            ],
        }
    ]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert "<|vision_start|><|image_pad|><|vision_end|>" in prompt
    inputs = processor(
        text=[prompt], images=[Image.new("RGB", (128, 128), "red")], return_tensors="pt"
    )
    # 128x128 / (16-pixel patches merged 2x2) = 16 image tokens.
    image_tokens = int((inputs["input_ids"] == model.config.image_token_id).sum())
    assert image_tokens == 16
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    assert out.shape[1] > inputs["input_ids"].shape[1]


def test_same_seed_same_bytes_and_idempotent(tiny_model_dir: str, tmp_path: Path) -> None:
    again = write_tiny_model(tmp_path / "again", seed=0)
    other = write_tiny_model(tmp_path / "other", seed=1)
    weights = (Path(tiny_model_dir) / "model.safetensors").read_bytes()
    assert (again / "model.safetensors").read_bytes() == weights
    assert (other / "model.safetensors").read_bytes() != weights
    tokenizer = (Path(tiny_model_dir) / "tokenizer.json").read_bytes()
    assert (again / "tokenizer.json").read_bytes() == tokenizer

    before = {p.name: p.stat().st_mtime_ns for p in again.iterdir()}
    assert write_tiny_model(again, seed=0) == again
    assert {p.name: p.stat().st_mtime_ns for p in again.iterdir()} == before
    assert (again / COMPLETE_MARKER).is_file()


def test_recipe_modules_import_without_torch() -> None:
    code = (
        "import sys, worker, worker.tiny_model, worker.recipe, worker.recipe.train, "
        "worker.recipe.evaluate, worker.recipe.preprocess\n"
        "heavy = [m for m in ('torch', 'transformers', 'peft') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
