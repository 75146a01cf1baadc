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


EVALUATION: dict[str, Any] = {
    "num_samples": 3,
    "base": {"exact_match": 0.0, "val_loss": 2.5, "rouge_l": None},
    "adapter": {"exact_match": 0.6667, "val_loss": 1.25, "rouge_l": None},
    "delta": {"exact_match": 0.6667, "val_loss": -1.25, "rouge_l": None},
}


def _front_matter(card: str) -> dict[str, Any]:
    import yaml

    assert card.startswith("---\n")
    return dict(yaml.safe_load(card.split("---\n")[1]))


def test_model_card_states_the_adapters_provenance(tmp_path: Path) -> None:
    from importlib.metadata import version

    from worker.recipe.export import write_model_card

    hp = Hyperparameters.model_validate(HP).model_dump(mode="json")
    card = write_model_card(
        tmp_path,
        base_model="team/vl: 8b",  # a name YAML would split without quoting
        dataset={"id": "ds-123", "name": "parts.zip", "num_samples": 12, "val_samples": 3},
        hyperparameters=hp,
        evaluation=EVALUATION,
    ).read_text(encoding="utf-8")
    front = _front_matter(card)
    assert front["base_model"] == "team/vl: 8b"
    assert front["library_name"] == "peft" and "relaytune" in front["tags"]
    body = card.split("---\n", 2)[2]
    assert "ds-123" in body and "parts.zip" in body and "Samples: 12" in body
    assert '"lora_rank": 4' in body and '"target_modules": [' in body
    assert "| exact_match | 0 | 0.6667 | 0.6667 |" in body
    assert "| val_loss | 2.5 | 1.25 | -1.25 |" in body
    assert "| rouge_l | n/a | n/a | n/a |" in body
    assert f"relaytune {version('relaytune')}" in body


def test_the_final_phase_exports_the_registered_name_and_its_card(
    tiny_model_dir: str, adapter_dir: Path, tmp_path: Path
) -> None:
    """What the final phase hands the user names the base as the job does, never the worker's
    directory, in adapter_config.json and in the model card."""
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    from orchestrator.runs import Claim
    from worker.phases import write_adapter_card
    from worker.recipe.export import save_adapter

    claim = Claim(
        job_id="j1",
        phase="final",
        attempt=1,
        pool="a100",
        base_model="tiny",
        hyperparameters=Hyperparameters.model_validate(HP),
        input_key="",
        artifact_key="",
        resume_key="",
        best_key="",
        run_prefix="jobs/j1/final/a1",
        start_epoch=2,
        end_epoch=3,
        dataset_id="ds-1",
        dataset_name="parts.zip",
    )
    artifact = tmp_path / "artifact"
    artifact.mkdir()
    manifest = {"num_samples": 5, "train": [0, 1, 2, 3], "val": [4]}
    (artifact / "manifest.json").write_text(json.dumps(manifest))
    export = tmp_path / "export"
    model = PeftModel.from_pretrained(
        AutoModelForImageTextToText.from_pretrained(tiny_model_dir), str(adapter_dir)
    )
    save_adapter(model, export / "adapter", base_model_name=claim.base_model)
    write_adapter_card(claim, artifact, export, EVALUATION)

    config = json.loads((export / "adapter" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "tiny"
    card = (export / "adapter" / "README.md").read_text(encoding="utf-8")
    assert _front_matter(card)["base_model"] == "tiny"
    assert tiny_model_dir not in card and str(Path(tiny_model_dir).parent) not in card
    assert "ds-1" in card and "parts.zip" in card
    assert "Samples: 5" in card and "Training samples: 4" in card
    assert "Validation samples: 1" in card


def _readme_serving_snippet() -> str:
    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Serving the adapter", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_readme_serving_snippet_answers_about_an_image(
    tiny_model_dir: str, adapter_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README's transformers + peft snippet, run as written on the tiny model, an adapter
    and an image; only the three inputs it names are pointed at this test's files."""
    import re

    from PIL import Image

    Image.new("RGB", (64, 64), "white").save(tmp_path / "photo.png")
    snippet = _readme_serving_snippet()
    inputs = {"base": tiny_model_dir, "adapter": str(adapter_dir)}
    for name, value in inputs.items():
        snippet, count = re.subn(rf"^{name} = .*$", f"{name} = {value!r}", snippet, flags=re.M)
        assert count == 1, name
    assert '"photo.jpg"' in snippet
    snippet = snippet.replace('"photo.jpg"', repr(str(tmp_path / "photo.png")))
    namespace: dict[str, Any] = {}
    exec(compile(snippet, "README.md", "exec"), namespace)  # our own README, run as written
    assert namespace["inputs"]["pixel_values"].numel() > 0  # the image went in
    assert namespace["output"].shape[1] > namespace["inputs"]["input_ids"].shape[1]
    assert capsys.readouterr().out.strip() == namespace["answer"].strip()
