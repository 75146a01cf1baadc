"""The recipe on the tiny model: artifact labels, training, exact resume, stop, export."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from orchestrator.errors import InvalidDataset
from tests.worker.conftest import CORNERS, QUESTION, write_corner_dataset
from worker.recipe.lora import language_model_targets
from worker.recipe.preprocess import IGNORE_INDEX, build_artifact, load_artifact
from worker.recipe.train import TrainHooks, TrainResult, train_epochs, warmup_cosine

HP: dict[str, Any] = {
    "lora_rank": 8,
    "lora_alpha": 32,
    "lora_dropout": 0.1,  # non-zero so that resuming must restore the RNG exactly
    "target_modules": ["q_proj", "v_proj"],
    "batch_size": 2,  # 5 train samples: micro-batches of 2, 2, 1 -> windows of 2 and 1
    "gradient_accumulation": 2,
    "learning_rate": 5e-3,
    "warmup_epochs": 2,
    "total_epochs": 3,
    "seed": 42,
}
STEPS_PER_EPOCH = 2


@dataclass
class Recorder:
    progress: list[tuple[int, int, int, dict[str, float]]] = field(default_factory=list)
    checkpoints: list[tuple[Path, int, str]] = field(default_factory=list)
    stop_after_steps: int | None = None

    def hooks(self) -> TrainHooks:
        return TrainHooks(
            on_progress=lambda s, t, e, m: self.progress.append((s, t, e, m)),
            should_stop=lambda: (
                self.stop_after_steps is not None and len(self.progress) >= self.stop_after_steps
            ),
            on_checkpoint=lambda d, s, k: self.checkpoints.append((d, s, k)),
        )


def _train(
    artifact_dir: Path,
    model_dir: str,
    out_dir: Path,
    start: int,
    end: int,
    resume_dir: Path | None = None,
    recorder: Recorder | None = None,
    hp: dict[str, Any] | None = None,
) -> TrainResult:
    return train_epochs(
        artifact_dir=artifact_dir,
        model_dir=model_dir,
        hyperparameters=hp or HP,
        start_epoch=start,
        end_epoch=end,
        resume_dir=resume_dir,
        out_dir=out_dir,
        hooks=(recorder or Recorder()).hooks(),
    )


def _adapter(ckpt_dir: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(ckpt_dir / "adapter" / "adapter_model.safetensors"))


def _on_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def _assert_same_adapter(a: Path, b: Path) -> None:
    import torch

    left, right = _adapter(a), _adapter(b)
    assert left.keys() == right.keys()
    for key in left:
        if _on_gpu():
            # CUDA kernels may accumulate in a different order from run to run.
            torch.testing.assert_close(left[key], right[key], atol=1e-5, rtol=0)
        else:
            # Bit-exact: same ops in the same order on the same threads, with the RNG,
            # optimizer and schedule restored from the checkpoint.
            assert torch.equal(left[key], right[key]), key


@pytest.fixture(scope="module")
def full_run(
    tmp_path_factory: pytest.TempPathFactory, artifact_dir: Path, tiny_model_dir: str
) -> tuple[TrainResult, Recorder]:
    """One uninterrupted run over all epochs, the reference for the resume tests."""
    recorder = Recorder()
    out = tmp_path_factory.mktemp("full")
    return _train(artifact_dir, tiny_model_dir, out, 0, 3, recorder=recorder), recorder


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


def test_prompt_is_never_truncated(dataset_dir: Path, tiny_model_dir: str, tmp_path: Path) -> None:
    with pytest.raises(InvalidDataset) as excinfo:
        build_artifact(dataset_dir, tiny_model_dir, tmp_path / "a", seed=1, max_length=8)
    assert excinfo.value.param == "case0.png"

    full = build_artifact(dataset_dir, tiny_model_dir, tmp_path / "b", seed=1)
    prompt_len = full["token_counts"]["per_sample"][0]["tokens"] - (
        full["token_counts"]["per_sample"][0]["label_tokens"] + 1
    )
    cut = build_artifact(
        dataset_dir, tiny_model_dir, tmp_path / "c", seed=1, max_length=prompt_len + 1
    )
    assert cut["token_counts"]["image"] == full["token_counts"]["image"]
    assert all(s["label_tokens"] == 1 for s in cut["token_counts"]["per_sample"])


def test_image_tokens_are_capped(tmp_path: Path, tiny_model_dir: str) -> None:
    from PIL import Image

    (tmp_path / "ds" / "images").mkdir(parents=True)
    Image.new("RGB", (128, 128), "red").save(tmp_path / "ds" / "images" / "big.png")
    row = {"big.png": {"question": QUESTION, "answer": "none"}}
    (tmp_path / "ds" / "annotations.json").write_text(json.dumps(row))
    full = build_artifact(tmp_path / "ds", tiny_model_dir, tmp_path / "full", seed=0)
    capped = build_artifact(
        tmp_path / "ds", tiny_model_dir, tmp_path / "capped", seed=0, max_image_tokens=4
    )
    assert full["token_counts"]["image"] == 16
    assert capped["token_counts"]["image"] == 4


def test_bad_rows_are_named(tmp_path: Path, tiny_model_dir: str) -> None:
    root = write_corner_dataset(tmp_path / "ds", n=2)
    (root / "images" / "case1.png").unlink()
    with pytest.raises(InvalidDataset) as excinfo:
        build_artifact(root, tiny_model_dir, tmp_path / "out", seed=0)
    assert excinfo.value.param == "case1.png"


def test_lora_targets_only_the_language_model() -> None:
    pattern = language_model_targets(["q_proj", "v_proj", "gate_proj"])
    assert re.fullmatch(pattern, "model.language_model.layers.0.self_attn.q_proj")
    assert re.fullmatch(pattern, "model.language_model.layers.3.mlp.gate_proj")
    assert not re.fullmatch(pattern, "model.visual.blocks.0.mlp.gate_proj")
    assert not re.fullmatch(pattern, "model.language_model.layers.0.self_attn.k_proj")


def test_schedule_warms_up_then_decays() -> None:
    factor = warmup_cosine(2, 10)
    values = [factor(s) for s in range(10)]
    assert values[:3] == [0.5, 1.0, 1.0]
    assert values == sorted(values[:2]) + sorted(values[2:], reverse=True)
    assert 0 < values[-1] < 0.05


def test_training_lowers_loss(artifact_dir: Path, tiny_model_dir: str, tmp_path: Path) -> None:
    hp = {**HP, "batch_size": 1, "gradient_accumulation": 1, "total_epochs": 2}
    recorder = Recorder()
    result = _train(artifact_dir, tiny_model_dir, tmp_path, 0, 2, recorder=recorder, hp=hp)
    losses = {e: [m["loss"] for _, _, ep, m in recorder.progress if ep == e] for e in (0, 1)}
    assert len(losses[0]) == len(losses[1]) == 5
    assert sum(losses[1]) / 5 < sum(losses[0]) / 5 - 0.1
    val = [m["val_loss"] for *_, m in recorder.progress if "val_loss" in m]
    assert len(val) == 2 and val[1] < val[0]
    assert result.global_step == 10 and not result.stopped
    assert [(d.name, k) for d, _, k in recorder.checkpoints] == [
        ("step-5", "step"),
        (tmp_path.name, "final"),
    ]
    # The handed-over step directory is gone: out_dir holds exactly the final checkpoint.
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "adapter",
        "manifest.json",
        "training_state.pt",
    ]


RESUME_SCRIPT = """
import json, sys
from pathlib import Path
from worker.recipe.train import TrainHooks, train_epochs
args = json.loads(sys.argv[1])
losses = []
result = train_epochs(
    artifact_dir=Path(args["artifact"]), model_dir=args["model"], hyperparameters=args["hp"],
    start_epoch=2, end_epoch=3, resume_dir=Path(args["resume"]), out_dir=Path(args["out"]),
    hooks=TrainHooks(on_progress=lambda s, t, e, m: losses.append([s, t, m["loss"], m["lr"]])),
)
print(json.dumps({"step": result.global_step, "losses": losses}))
"""


def test_resume_in_fresh_process_matches_uninterrupted_run(
    full_run: tuple[TrainResult, Recorder],
    artifact_dir: Path,
    tiny_model_dir: str,
    tmp_path: Path,
) -> None:
    warmup = Recorder()
    first = _train(artifact_dir, tiny_model_dir, tmp_path / "warmup", 0, 2, recorder=warmup)
    assert first.global_step == 2 * STEPS_PER_EPOCH
    assert json.loads((first.checkpoint_dir / "manifest.json").read_text())["epoch"] == 2

    args = {
        "artifact": str(artifact_dir),
        "model": tiny_model_dir,
        "hp": HP,
        "resume": str(first.checkpoint_dir),
        "out": str(tmp_path / "final"),
    }
    proc = subprocess.run(
        [sys.executable, "-c", RESUME_SCRIPT, json.dumps(args)],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    resumed = json.loads(proc.stdout.strip().splitlines()[-1])

    reference, recorder = full_run
    assert resumed["step"] == reference.global_step == 3 * STEPS_PER_EPOCH
    expected = [[s, t, m["loss"], m["lr"]] for s, t, _, m in recorder.progress[-STEPS_PER_EPOCH:]]
    # Same steps, losses and LRs: one schedule across the phase boundary.
    assert [row[:2] for row in resumed["losses"]] == [row[:2] for row in expected]
    got = [v for row in resumed["losses"] for v in row[2:]]
    want = [v for row in expected for v in row[2:]]
    assert got == (pytest.approx(want, rel=1e-4) if _on_gpu() else want)
    _assert_same_adapter(tmp_path / "final", reference.checkpoint_dir)


def test_stop_writes_checkpoint_that_resumes_exactly(
    full_run: tuple[TrainResult, Recorder],
    artifact_dir: Path,
    tiny_model_dir: str,
    tmp_path: Path,
) -> None:
    recorder = Recorder(stop_after_steps=3)  # mid-epoch 1
    stopped = _train(artifact_dir, tiny_model_dir, tmp_path / "w", 0, 2, recorder=recorder)
    assert stopped.stopped and stopped.global_step == 3
    assert stopped.checkpoint_dir == tmp_path / "w" / "step-3"
    manifest = json.loads((stopped.checkpoint_dir / "manifest.json").read_text())
    assert (manifest["kind"], manifest["epoch"], manifest["steps_in_epoch"]) == ("stop", 1, 1)
    assert recorder.checkpoints[-1] == (stopped.checkpoint_dir, 3, "stop")

    resumed = _train(
        artifact_dir, tiny_model_dir, tmp_path / "r", 1, 3, resume_dir=stopped.checkpoint_dir
    )
    assert not resumed.stopped and resumed.global_step == full_run[0].global_step
    _assert_same_adapter(resumed.checkpoint_dir, full_run[0].checkpoint_dir)


def test_evaluate_and_export_gives_a_plain_peft_adapter(
    full_run: tuple[TrainResult, Recorder],
    artifact_dir: Path,
    tiny_model_dir: str,
    tmp_path: Path,
) -> None:
    import torch
    from peft import PeftModel
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from worker.recipe.evaluate import evaluate_and_export

    evaluation = evaluate_and_export(
        artifact_dir=artifact_dir,
        model_dir=tiny_model_dir,
        checkpoint_dir=full_run[0].checkpoint_dir,
        out_dir=tmp_path,
    )
    assert json.loads((tmp_path / "evaluation.json").read_text()) == evaluation
    assert evaluation["val_loss"] < evaluation["base"]["val_loss"]
    assert 0 <= evaluation["token_accuracy"] <= 1
    assert len(evaluation["answers"]) == 1
    assert set(evaluation["answers"][0]) == {"file", "reference", "adapter", "base"}
    assert evaluation["answers"][0]["reference"] in CORNERS
    adapter_dir = tmp_path / "adapter"
    assert {p.name for p in adapter_dir.iterdir()} >= {
        "adapter_config.json",
        "adapter_model.safetensors",
    }
    assert evaluation["adapter_bytes"] == sum(p.stat().st_size for p in adapter_dir.iterdir())

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
