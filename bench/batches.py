"""Synthetic inputs: one image and a few dozen text tokens per sample, random content."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class BatchShape:
    micro_batch: int
    seq_len: int  # LLM tokens per sample, image tokens included
    image_tokens: int  # merged image tokens per sample (what the LLM sees)
    patches: int  # vision-tower patches per image
    label_tokens: int  # tokens per sample that carry a loss


def batch_shape(cfg: Any, micro_batch: int, image_size: int, text_tokens: int) -> BatchShape:
    v = cfg.vision_config
    grid = image_size // v.patch_size
    patches = grid * grid
    image_tokens = patches // (v.spatial_merge_size**2)
    return BatchShape(
        micro_batch=micro_batch,
        seq_len=text_tokens + image_tokens + 2,
        image_tokens=image_tokens,
        patches=patches,
        label_tokens=text_tokens // 2,
    )


def make_batch(
    cfg: Any, shape: BatchShape, image_size: int, device: torch.device, dtype: torch.dtype
) -> dict[str, torch.Tensor]:
    """A batch laid out as Qwen3VLProcessor lays it out for one image per sample.

    Sample: <prompt text> <|vision_start|> <|image_pad|> * image_tokens <|vision_end|> <answer>;
    loss on the answer half of the text only. pixel_values holds the patches of every image,
    (num_patches, channels * temporal_patch * patch * patch), image_grid_thw (1, h, w) per image,
    mm_token_type_ids 1 on image-pad tokens and 0 elsewhere.
    """
    v = cfg.vision_config
    b = shape.micro_batch
    g = torch.Generator().manual_seed(1234)
    text_tokens = shape.seq_len - shape.image_tokens - 2
    prompt = text_tokens - shape.label_tokens
    low = 10  # stay clear of any special ids
    high = min(cfg.text_config.vocab_size, cfg.vision_start_token_id) - 1
    input_ids = torch.randint(low, high, (b, shape.seq_len), generator=g)
    input_ids[:, prompt] = cfg.vision_start_token_id
    img = slice(prompt + 1, prompt + 1 + shape.image_tokens)
    input_ids[:, img] = cfg.image_token_id
    input_ids[:, prompt + 1 + shape.image_tokens] = cfg.vision_end_token_id
    mm_token_type_ids = torch.zeros_like(input_ids)
    mm_token_type_ids[:, img] = 1
    labels = torch.full_like(input_ids, -100)
    labels[:, -shape.label_tokens :] = input_ids[:, -shape.label_tokens :]
    grid = image_size // v.patch_size
    patch_dim = v.in_channels * v.temporal_patch_size * v.patch_size * v.patch_size
    pixel_values = torch.randn(b * shape.patches, patch_dim, generator=g)
    image_grid_thw = torch.tensor([[1, grid, grid]] * b, dtype=torch.long)
    return {
        "input_ids": input_ids.to(device),
        "attention_mask": torch.ones_like(input_ids).to(device),
        "mm_token_type_ids": mm_token_type_ids.to(device),
        "labels": labels.to(device),
        "pixel_values": pixel_values.to(device=device, dtype=dtype),
        "image_grid_thw": image_grid_thw.to(device),
    }
