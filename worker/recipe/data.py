"""Batching for the recipe: padding collate, seeded per-epoch order, accumulation windows."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from worker.recipe.preprocess import IGNORE_INDEX

if TYPE_CHECKING:
    import torch

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


def epoch_micro_batches(
    indices: list[int], batch_size: int, seed: int, epoch: int
) -> list[list[int]]:
    """Sample indices for each micro-batch of one epoch.

    The order depends only on (seed, epoch), never on global RNG state, so a run resumed in
    another process at any epoch sees exactly the batches an uninterrupted run would.
    """
    import torch

    generator = torch.Generator().manual_seed(seed + epoch)
    order = torch.randperm(len(indices), generator=generator).tolist()
    shuffled = [indices[i] for i in order]
    return [shuffled[i : i + batch_size] for i in range(0, len(shuffled), batch_size)]


def accumulation_windows(
    micro_batches: list[list[int]], gradient_accumulation: int
) -> list[list[list[int]]]:
    """Group micro-batches into optimizer steps; the last window of an epoch may be shorter."""
    step = gradient_accumulation
    return [micro_batches[i : i + step] for i in range(0, len(micro_batches), step)]


def steps_per_epoch(num_train: int, batch_size: int, gradient_accumulation: int) -> int:
    micro = -(-num_train // batch_size)
    return -(-micro // gradient_accumulation)


def to_device(batch: Batch, device: torch.device, dtype: torch.dtype) -> Batch:
    """Move a batch; only floating tensors (pixel values) take the model's dtype."""
    return {
        k: v.to(device=device, dtype=dtype) if v.is_floating_point() else v.to(device)
        for k, v in batch.items()
    }
