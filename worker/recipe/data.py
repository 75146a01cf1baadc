"""Token conventions and batching for the recipe: padding collate, seeded per-epoch order,
optimizer-step windows."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

# The label of a token that is not trained on (prompt, image and padding tokens): the
# cross-entropy's ignore_index.
IGNORE_INDEX = -100
# Qwen's chat template closes every turn with this token: the last trained token of every
# answer, and where a generated answer ends.
TURN_END = "<|im_end|>"

Batch = dict[str, "torch.Tensor"]

# Per-token tensors and the value that pads each of them on the right.
_SEQUENCE_KEYS = ("input_ids", "attention_mask", "labels", "mm_token_type_ids")


def collate(samples: list[dict[str, Any]], pad_token_id: int) -> Batch:
    """Right-pad the token tensors; concatenate the image patches and grids in sample order."""
    import torch

    pad_values = {
        "input_ids": pad_token_id,
        "attention_mask": 0,
        "labels": IGNORE_INDEX,
        "mm_token_type_ids": 0,
    }
    length = max(int(s["input_ids"].numel()) for s in samples)
    batch: Batch = {}
    for key in _SEQUENCE_KEYS:
        rows = [
            torch.nn.functional.pad(s[key], (0, length - s[key].numel()), value=pad_values[key])
            for s in samples
        ]
        batch[key] = torch.stack(rows)
    batch["pixel_values"] = torch.cat([s["pixel_values"] for s in samples])
    batch["image_grid_thw"] = torch.cat([s["image_grid_thw"] for s in samples])
    return batch


def epoch_windows(
    indices: list[int], effective_batch: int, seed: int, epoch: int
) -> list[list[int]]:
    """Sample indices of each optimizer step of one epoch; the last may be shorter.

    The order depends only on (seed, epoch), never on global RNG state, so a run resumed in
    another process at any epoch sees exactly the batches an uninterrupted run would. A window
    holds effective_batch = batch_size x gradient_accumulation samples whatever the micro-batch
    size, so an OOM recovery that halves the micro-batch keeps every optimizer step's samples.
    """
    import torch

    generator = torch.Generator().manual_seed(seed + epoch)
    order = torch.randperm(len(indices), generator=generator).tolist()
    shuffled = [indices[i] for i in order]
    return [shuffled[i : i + effective_batch] for i in range(0, len(shuffled), effective_batch)]


def split_window(window: list[int], micro_batch_size: int) -> list[list[int]]:
    """The micro-batches (one forward/backward each) of an optimizer step."""
    return [window[i : i + micro_batch_size] for i in range(0, len(window), micro_batch_size)]


def steps_per_epoch(num_train: int, effective_batch: int) -> int:
    return -(-num_train // effective_batch)


def to_device(batch: Batch, device: torch.device, dtype: torch.dtype) -> Batch:
    """Move a batch; only floating tensors (pixel values) take the model's dtype."""
    return {
        k: v.to(device=device, dtype=dtype) if v.is_floating_point() else v.to(device)
        for k, v in batch.items()
    }
