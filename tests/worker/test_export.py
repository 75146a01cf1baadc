"""Export on the tiny model: the PEFT adapter, the merged model, and the seed's deploy path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from orchestrator.hyperparameters import Hyperparameters
from tests.worker.conftest import QUESTION
from worker.recipe import CHECKPOINT_FORMAT

HP: dict[str, Any] = {
    "lora_rank": 4,
    "lora_alpha": 8,
    "lora_dropout": 0.1,
    "target_modules": ["q_proj", "v_proj"],
    "seed": 7,
}


def write_random_checkpoint(model_dir: str, ckpt_dir: Path, **manifest: Any) -> Path:
    """A checkpoint directory as the trainer lays it out, with random (non-zero) LoRA B.

    Fresh LoRA has B = 0, i.e. no effect at all; random B makes the adapter change the logits
    without spending test time on training.
    """
    import torch

    from worker.recipe.lora import load_base, wrap_with_lora

    base = load_base(model_dir, torch.device("cpu"), torch.float32)
    model = wrap_with_lora(base, Hyperparameters.model_validate(HP))  # seed 7
    generator = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.3)
    model.save_pretrained(str(ckpt_dir / "adapter"), safe_serialization=True)
    fields = {
        "format": CHECKPOINT_FORMAT,
        "kind": "final",
        "step": 6,
        "epoch": 3,
        "val_loss": None,
        "hyperparameters": HP,
        **manifest,
    }
    (ckpt_dir / "manifest.json").write_text(json.dumps(fields))
    return ckpt_dir


@pytest.fixture(scope="module")
def adapter_dir(tiny_model_dir: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    ckpt = write_random_checkpoint(tiny_model_dir, tmp_path_factory.mktemp("ckpt"))
    return ckpt / "adapter"


@pytest.fixture(scope="module")
def image_inputs(tiny_model_dir: str) -> dict[str, Any]:
    """A user's chat prompt with an image, made by the processor as a deployment would."""
    from PIL import Image, ImageDraw
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    image = Image.new("RGB", (64, 64), "white")
    ImageDraw.Draw(image).rectangle([40, 0, 63, 23], fill="red")
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}
    ]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return dict(processor(text=[prompt], images=[image], return_tensors="pt"))


def _logits(model: Any, inputs: dict[str, Any]) -> Any:
    import torch

    model.eval()
    with torch.no_grad():
        return model(**inputs).logits


def test_save_adapter_writes_peft_safetensors(
    tiny_model_dir: str, adapter_dir: Path, tmp_path: Path
) -> None:
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    from worker.recipe.export import save_adapter

    model = PeftModel.from_pretrained(
        AutoModelForImageTextToText.from_pretrained(tiny_model_dir), str(adapter_dir)
    )
    info = save_adapter(model, tmp_path / "adapter", base_model_name="Qwen/Qwen3-VL-8B-Instruct")
    assert info["format"] == "peft-safetensors"
    assert set(info["files"]) >= {"adapter_config.json", "adapter_model.safetensors"}
    assert info["bytes"] == sum(p.stat().st_size for p in (tmp_path / "adapter").rglob("*"))
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "Qwen/Qwen3-VL-8B-Instruct"
    assert config["r"] == HP["lora_rank"]
    # The worker's local download path must not leak into what the user downloads.
    card = (tmp_path / "adapter" / "README.md").read_text()
    assert tiny_model_dir not in card and "Qwen/Qwen3-VL-8B-Instruct" in card


def test_seed_deploy_paths_give_the_same_logits(
    tiny_model_dir: str, adapter_dir: Path, image_inputs: dict[str, Any]
) -> None:
    """The seed's deploy snippet with the auto class that loads Qwen3-VL: PeftModel.from_pretrained
    and base.load_adapter agree with each other, and the adapter changes the base's logits."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    base_logits = _logits(AutoModelForImageTextToText.from_pretrained(tiny_model_dir), image_inputs)
    peft_model = PeftModel.from_pretrained(
        AutoModelForImageTextToText.from_pretrained(tiny_model_dir), str(adapter_dir)
    )
    loaded = AutoModelForImageTextToText.from_pretrained(tiny_model_dir)
    loaded.load_adapter(str(adapter_dir))

    via_peft, via_load_adapter = _logits(peft_model, image_inputs), _logits(loaded, image_inputs)
    torch.testing.assert_close(via_peft, via_load_adapter, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(via_peft, base_logits, atol=1e-3)


def test_merged_model_loads_alone_and_matches_base_plus_adapter(
    tiny_model_dir: str, adapter_dir: Path, image_inputs: dict[str, Any], tmp_path: Path
) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from worker.recipe.export import save_merged

    def with_adapter() -> Any:
        return PeftModel.from_pretrained(
            AutoModelForImageTextToText.from_pretrained(tiny_model_dir), str(adapter_dir)
        )

    expected = _logits(with_adapter(), image_inputs)
    info = save_merged(with_adapter(), tiny_model_dir, tmp_path / "merged")
    assert info["format"] == "transformers-safetensors" and info["dtype"] == "float32"
    assert "config.json" in info["files"] and "model.safetensors" in info["files"]

    merged = AutoModelForImageTextToText.from_pretrained(tmp_path / "merged")
    assert not any("lora" in name for name, _ in merged.named_parameters())
    torch.testing.assert_close(_logits(merged, image_inputs), expected, rtol=1e-4, atol=1e-4)
    # The processor travels with the merged weights: the folder is usable on its own.
    processor = AutoProcessor.from_pretrained(tmp_path / "merged")
    assert processor.tokenizer.convert_tokens_to_ids("<|image_pad|>") == (
        merged.config.image_token_id
    )


def test_causal_lm_auto_class_refuses_qwen3_vl(tiny_model_dir: str) -> None:
    """The seed deploys with AutoModelForCausalLM.from_pretrained("Qwen/Qwen3-VL-8B"); in
    transformers 5.24 that auto class does not map Qwen3VLConfig (the full vision-language
    config) and raises "Unrecognized configuration class ... Qwen3VLConfig ...". relaytune's
    exports are therefore documented and tested with AutoModelForImageTextToText."""
    from transformers import AutoModelForCausalLM

    with pytest.raises(ValueError, match=r"Unrecognized configuration class.*Qwen3VLConfig"):
        AutoModelForCausalLM.from_pretrained(tiny_model_dir)
