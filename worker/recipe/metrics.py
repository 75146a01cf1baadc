"""Token-level loss and accuracy, shared by the training loop and the evaluation."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from worker.recipe.data import Batch, collate, to_device
from worker.recipe.preprocess import IGNORE_INDEX

if TYPE_CHECKING:
    import torch

MODEL_INPUTS = (
    "input_ids",
    "attention_mask",
    "pixel_values",
    "image_grid_thw",
    "mm_token_type_ids",
)


def forward_logits(model: Any, batch: Batch) -> torch.Tensor:
    # mm_token_type_ids must be passed: without it Qwen3-VL cannot place the image tokens in
    # its multimodal rotary positions.
    inputs = {k: batch[k] for k in MODEL_INPUTS}
    logits: torch.Tensor = model(**inputs, use_cache=False).logits
    return logits


def token_stats(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int, int]:
    """(summed next-token loss, number of label tokens, number predicted right)."""
    import torch

    shift_logits = logits[:, :-1].float()
    shift_labels = labels[:, 1:]
    mask = shift_labels != IGNORE_INDEX
    loss_sum = torch.nn.functional.cross_entropy(
        shift_logits.reshape(-1, shift_logits.size(-1)),
        shift_labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )
    correct = ((shift_logits.argmax(-1) == shift_labels) & mask).sum()
    return loss_sum, int(mask.sum()), int(correct)


def label_token_count(batch: Batch) -> int:
    return int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())


def evaluate_samples(
    model: Any,
    samples: list[dict[str, Any]],
    indices: list[int],
    *,
    pad_token_id: int,
    device: torch.device,
    dtype: torch.dtype,
) -> tuple[float, float]:
    """(mean token loss, token accuracy) over the given samples, one sample at a time."""
    import torch

    was_training = model.training
    model.eval()
    loss_total, tokens, correct = 0.0, 0, 0
    with torch.no_grad():
        for index in indices:
            batch = to_device(collate([samples[index]], pad_token_id), device, dtype)
            loss_sum, n, c = token_stats(forward_logits(model, batch), batch["labels"])
            loss_total += float(loss_sum)
            tokens += n
            correct += c
    model.train(was_training)
    return loss_total / max(tokens, 1), correct / max(tokens, 1)
