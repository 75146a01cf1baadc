"""Exact, compact storage of the image processor's output in the preprocess artifact.

The processor turns each image into fp32 patches: resize to a multiple of the patch grid, scale
and normalise, then cut into patches with every patch repeated `temporal_patch_size` times. For
8-bit images that is 8 bytes (or more) for every byte of the resized image, and a training
phase downloads and loads all of it. What carries the information is the resized 8-bit image,
so the artifact stores that (PNG-encoded, lossless) and the training worker runs the same
image processor on it, without resizing, to get the very same patches.

Exactness is checked, not assumed: at preprocess the stored image is turned back into patches
with the processor saved next to the samples, and compared bit for bit with what the processor
gave the sample. A sample whose patches do not come back exactly (a processor without 8-bit
input, say) keeps its fp32 patches.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

IMAGE_PROCESSOR_DIR = "image_processor"
IMAGES_KEY = "png_images"  # per sample: PNG bytes (uint8 tensors) of the resized images


def load_image_processor(artifact_dir: Path) -> Any:
    from transformers import AutoImageProcessor

    return AutoImageProcessor.from_pretrained(Path(artifact_dir) / IMAGE_PROCESSOR_DIR)


def patches_from_images(
    image_processor: Any, images: list[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(pixel_values, image_grid_thw) of already-resized CHW uint8 images."""
    out = image_processor(images=images, do_resize=False, return_tensors="pt")
    return out["pixel_values"], out["image_grid_thw"]


def image_from_patches(
    image_processor: Any, patches: torch.Tensor, grid: list[int]
) -> torch.Tensor:
    """The CHW uint8 image whose patches these are: the inverse of the processor's patchify,
    scaling and normalisation, rounded to 8 bits (checked by the caller, not trusted)."""
    import torch

    t, h, w = grid
    merge = image_processor.merge_size
    patch = image_processor.patch_size
    temporal = image_processor.temporal_patch_size
    channels = patches.shape[1] // (temporal * patch * patch)
    # The processor's layout per image: (h/merge, w/merge, merge, merge, C, T, P, P); every
    # temporal copy of a still image is the same frame, so the first one is the image.
    grid_view = patches.reshape(
        t, h // merge, w // merge, merge, merge, channels, temporal, patch, patch
    )[0, ..., 0, :, :]
    normalised = grid_view.permute(4, 0, 2, 5, 1, 3, 6).reshape(channels, h * patch, w * patch)
    mean = torch.tensor(image_processor.image_mean).view(-1, 1, 1)
    std = torch.tensor(image_processor.image_std).view(-1, 1, 1)
    pixels: torch.Tensor = (normalised * std + mean) / image_processor.rescale_factor
    return pixels.round().clamp(0, 255).to(torch.uint8)


def encode_png(image: torch.Tensor) -> torch.Tensor:
    """PNG bytes (as a uint8 tensor, which torch.load's weights_only accepts) of an RGB image."""
    import io

    import torch
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image.permute(1, 2, 0).contiguous().numpy()).save(
        buffer, format="PNG", compress_level=6
    )
    return torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8)


def decode_png(data: torch.Tensor) -> torch.Tensor:
    import io

    import numpy as np
    import torch
    from PIL import Image

    with Image.open(io.BytesIO(data.numpy().tobytes())) as image:
        pixels = np.asarray(image.convert("RGB"))
    return torch.from_numpy(pixels.copy()).permute(2, 0, 1).contiguous()


def compact_sample(sample: dict[str, Any], image_processor: Any) -> dict[str, Any]:
    """The sample with its fp32 patches replaced by PNGs of its resized images, when those give
    back the same patches bit for bit; otherwise the sample unchanged."""
    import torch

    grids = sample["image_grid_thw"].tolist()
    if not grids or any(t != 1 for t, _, _ in grids):
        return sample  # no images, or not still ones
    images, start = [], 0
    for grid in grids:
        count = grid[0] * grid[1] * grid[2]
        images.append(
            image_from_patches(image_processor, sample["pixel_values"][start : start + count], grid)
        )
        start += count
    if any(image.shape[0] != 3 for image in images):
        return sample  # PNG here holds RGB only
    rebuilt, rebuilt_grids = patches_from_images(image_processor, images)
    if not (
        torch.equal(rebuilt, sample["pixel_values"])
        and torch.equal(rebuilt_grids, sample["image_grid_thw"])
    ):
        return sample
    compact = {k: v for k, v in sample.items() if k != "pixel_values"}
    compact[IMAGES_KEY] = [encode_png(image) for image in images]
    return compact


def expand_sample(sample: dict[str, Any], image_processor: Any) -> dict[str, Any]:
    """The inverse of compact_sample: the sample with its fp32 patches back."""
    import torch

    if IMAGES_KEY not in sample:
        return sample
    images = [decode_png(png) for png in sample[IMAGES_KEY]]
    pixel_values, grids = patches_from_images(image_processor, images)
    if not torch.equal(grids, sample["image_grid_thw"]):
        raise ValueError(
            f"rebuilt image grids {grids.tolist()} differ from the artifact's "
            f"{sample['image_grid_thw'].tolist()}"
        )
    expanded = {k: v for k, v in sample.items() if k != IMAGES_KEY}
    expanded["pixel_values"] = pixel_values
    return expanded
