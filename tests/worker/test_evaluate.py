"""evaluate_and_export on the tiny model: report schema, base vs adapter, best checkpoint, merge."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from orchestrator.hyperparameters import Hyperparameters
from tests.worker.conftest import CORNERS
from tests.worker.test_export import HP, write_random_checkpoint
from worker.recipe.evaluate import (
    EVALUATION_SCHEMA,
    METRICS,
    _best_checkpoint,
    evaluate_and_export,
    generate_answer,
    prompt_and_reference,
)
from worker.recipe.preprocess import load_artifact

MAX_NEW_TOKENS = 6


@pytest.fixture(scope="module")
def checkpoint(tiny_model_dir: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_random_checkpoint(tiny_model_dir, tmp_path_factory.mktemp("ckpt"))


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("export")


@pytest.fixture(scope="module")
def report(
    artifact_dir: Path, tiny_model_dir: str, checkpoint: Path, export_dir: Path
) -> dict[str, Any]:
    return evaluate_and_export(
        artifact_dir=artifact_dir,
        model_dir=tiny_model_dir,
        checkpoint_dir=checkpoint,
        out_dir=export_dir,
        base_model_name="Qwen/Qwen3-VL-8B-Instruct",
        hyperparameters=Hyperparameters(eval_max_new_tokens=MAX_NEW_TOKENS),
    )


def test_report_has_the_stable_schema(
    report: dict[str, Any], export_dir: Path, artifact_dir: Path
) -> None:
    assert json.loads((export_dir / "evaluation.json").read_text()) == report
    assert set(report) == {
        "schema",
        "num_samples",
        "base",
        "adapter",
        "delta",
        "samples",
        "best_checkpoint",
        "generation",
        "adapter_export",
        "merged",
        "summary",
    }
    assert report["schema"] == EVALUATION_SCHEMA
    manifest, _ = load_artifact(artifact_dir)
    assert report["num_samples"] == len(manifest["val"]) == len(report["samples"])
    for side in ("base", "adapter"):
        metrics = report[side]
        assert set(metrics) == set(METRICS)
        assert all(0.0 <= metrics[m] <= 1.0 for m in ("exact_match", "token_accuracy", "rouge_l"))
        assert metrics["val_loss"] > 0
    for metric in METRICS:
        assert report["delta"][metric] == pytest.approx(
            report["adapter"][metric] - report["base"][metric]
        )
    for row in report["samples"]:
        assert set(row) == {"file", "reference", "base_answer", "adapter_answer"}
        assert row["file"] in manifest["files"] and row["reference"] in CORNERS
    assert report["generation"] == {"greedy": True, "max_new_tokens": MAX_NEW_TOKENS}
    assert report["merged"] is None and not (export_dir / "merged").exists()


def test_adapter_is_exported_in_peft_format(report: dict[str, Any], export_dir: Path) -> None:
    exported = report["adapter_export"]
    adapter_dir = export_dir / "adapter"
    assert exported["format"] == "peft-safetensors"
    assert set(exported["files"]) >= {"adapter_config.json", "adapter_model.safetensors"}
    assert exported["bytes"] == sum(p.stat().st_size for p in adapter_dir.rglob("*"))
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "Qwen/Qwen3-VL-8B-Instruct"


def test_summary_is_flat_numbers(report: dict[str, Any]) -> None:
    summary = report["summary"]
    assert all(v is None or isinstance(v, int | float) for v in summary.values())
    assert summary["adapter_rouge_l"] == report["adapter"]["rouge_l"]
    assert summary["delta_val_loss"] == report["delta"]["val_loss"]
    assert summary["adapter_bytes"] == report["adapter_export"]["bytes"]
    assert summary["merged_bytes"] is None
    assert summary["best_step"] == 6 and "best_val_loss" in summary


def test_base_side_is_the_plain_base_model(
    report: dict[str, Any], artifact_dir: Path, tiny_model_dir: str
) -> None:
    """The base figures come from the adapter switched off; they must be the bare model's."""
    import torch

    from worker.recipe.lora import load_base
    from worker.recipe.metrics import evaluate_samples

    manifest, samples = load_artifact(artifact_dir)
    cpu = torch.device("cpu")
    base = load_base(tiny_model_dir, cpu, torch.float32).eval()
    loss, accuracy = evaluate_samples(
        base,
        samples,
        manifest["val"],
        pad_token_id=manifest["pad_token_id"],
        device=cpu,
        dtype=torch.float32,
    )
    assert report["base"]["val_loss"] == pytest.approx(loss, rel=1e-5)
    assert report["base"]["token_accuracy"] == pytest.approx(accuracy)
    # Random LoRA B moves the loss, so the two sides are really two models (by little: the
    # tiny random base's logits are nearly uniform, its loss close to log(vocab size)).
    assert report["adapter"]["val_loss"] != pytest.approx(loss, rel=1e-5)
    assert report["best_checkpoint"] == {
        "step": 6,
        "epoch": 3,
        "kind": "final",
        "metric": "val_loss",
        "value": report["adapter"]["val_loss"],
        "source": "evaluation",
    }


def test_prompt_stops_before_the_answer(artifact_dir: Path, tiny_model_dir: str) -> None:
    from transformers import AutoProcessor

    tokenizer = AutoProcessor.from_pretrained(tiny_model_dir).tokenizer
    manifest, samples = load_artifact(artifact_dir)
    sample = samples[manifest["val"][0]]
    prompt, reference = prompt_and_reference(sample)
    n = len(prompt["input_ids"])
    assert sample["input_ids"][n : n + len(reference)].tolist() == reference
    assert tokenizer.decode(prompt["input_ids"]).endswith("<|im_start|>assistant\n")
    assert tokenizer.decode(reference, skip_special_tokens=True) in CORNERS
    assert prompt["pixel_values"] is sample["pixel_values"]


def test_reference_is_the_first_answer_of_a_conversation() -> None:
    import torch

    ignore = -100
    ids = torch.tensor([1, 2, 3, 10, 11, 4, 5, 12, 6])
    labels = torch.tensor([ignore, ignore, ignore, 10, 11, ignore, ignore, 12, ignore])
    sample = {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "labels": labels,
        "mm_token_type_ids": torch.zeros_like(ids),
        "pixel_values": torch.zeros(4, 3),
        "image_grid_thw": torch.tensor([[1, 2, 2]]),
    }
    prompt, reference = prompt_and_reference(sample)
    assert reference == [10, 11]
    assert prompt["input_ids"].tolist() == [1, 2, 3]
    assert prompt["mm_token_type_ids"].shape == prompt["attention_mask"].shape == (3,)
    assert prompt["image_grid_thw"] is sample["image_grid_thw"]


def test_generate_answer_is_capped_and_cut_at_a_stop_token(
    artifact_dir: Path, tiny_model_dir: str
) -> None:
    import torch

    from worker.recipe.lora import load_base

    manifest, samples = load_artifact(artifact_dir)
    prompt, _ = prompt_and_reference(samples[manifest["val"][0]])
    cpu = torch.device("cpu")
    model = load_base(tiny_model_dir, cpu, torch.float32).eval()
    options: dict[str, Any] = {
        "pad_token_id": manifest["pad_token_id"],
        "device": cpu,
        "dtype": torch.float32,
    }
    free = generate_answer(model, prompt, stop_ids={-1}, max_new_tokens=3, **options)
    assert 1 <= len(free) <= 3
    again = generate_answer(model, prompt, stop_ids={-1}, max_new_tokens=3, **options)
    assert again == free  # greedy
    assert generate_answer(model, prompt, stop_ids={free[0]}, max_new_tokens=3, **options) == []


def test_best_checkpoint_value_comes_from_its_manifest() -> None:
    measured = {"val_loss": 1.5, "token_accuracy": 0.25}
    ckpt = {"step": 4, "epoch": 2, "kind": "best"}

    def pick(**manifest: Any) -> tuple[str, Any, str]:
        best = _best_checkpoint({**ckpt, **manifest}, "val_loss", measured)
        return best["metric"], best["value"], best["source"]

    # The trainer's record of the best so far, when it is this very checkpoint.
    assert pick(best={"metric": "token_accuracy", "value": 0.5, "step": 4}) == (
        "token_accuracy",
        0.5,
        "checkpoint",
    )
    # A record of an earlier best does not describe this (say, the final) checkpoint.
    assert pick(
        best={"metric": "token_accuracy", "value": 0.5, "step": 2}, metrics={"token_accuracy": 0.4}
    ) == ("token_accuracy", 0.4, "checkpoint")
    assert pick(val_loss=1.2) == ("val_loss", 1.2, "checkpoint")
    assert pick(val_loss=None) == ("val_loss", 1.5, "evaluation")


def test_best_checkpoint_and_merge_follow_the_checkpoint_hyperparameters(
    artifact_dir: Path, tiny_model_dir: str, tmp_path: Path
) -> None:
    """Without explicit hyperparameters the checkpoint's own are used: here they ask for
    selection by token accuracy and for a merged export."""
    ckpt = write_random_checkpoint(
        tiny_model_dir,
        tmp_path / "best",
        kind="best",
        step=4,
        epoch=2,
        best={"metric": "token_accuracy", "value": 0.75, "step": 4},
        hyperparameters={**HP, "best_metric": "token_accuracy", "export_merged": True},
    )
    report = evaluate_and_export(
        artifact_dir=artifact_dir,
        model_dir=tiny_model_dir,
        checkpoint_dir=ckpt,
        out_dir=tmp_path / "out",
    )
    assert report["best_checkpoint"] == {
        "step": 4,
        "epoch": 2,
        "kind": "best",
        "metric": "token_accuracy",
        "value": 0.75,
        "source": "checkpoint",
    }
    assert report["summary"]["best_token_accuracy"] == 0.75
    merged = report["merged"]
    assert merged["format"] == "transformers-safetensors"
    assert {"config.json", "model.safetensors", "processor_config.json"} <= set(merged["files"])
    assert report["summary"]["merged_bytes"] == merged["bytes"] > report["adapter_export"]["bytes"]
