"""Augmented copies of training images with torchvision transforms v2, reproducible by seed.

Each copy draws from torch's global RNG inside `fork_rng`, seeded from (job seed, sample id,
copy number): a rerun gives identical pixels, the caller's RNG state is left untouched, and
adding a sample to the data set does not change how the others are augmented.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from typing import Any

from orchestrator.hyperparameters import Augmentation


@dataclass(frozen=True)
class AugmentationPlan:
    copies: int
    rotation_degrees: float
    crop_scale_min: float
    color_jitter: float

    @classmethod
    def from_hyperparameters(cls, augmentation: Augmentation) -> AugmentationPlan:
        """The plan, with copies=0 when augmentation is off or no transform would change a
        pixel (copies identical to their source would only repeat it)."""
        plan = cls(
            augmentation.copies if augmentation.enabled else 0,
            augmentation.rotation_degrees,
            augmentation.crop_scale_min,
            augmentation.color_jitter,
        )
        return plan if plan.transforms() else replace(plan, copies=0)

    def transforms(self) -> list[dict[str, Any]]:
        """What is applied, in order, as recorded in the artifact manifest."""
        applied: list[dict[str, Any]] = []
        if self.rotation_degrees > 0:
            applied.append(
                {
                    "name": "RandomRotation",
                    "degrees": [-self.rotation_degrees, self.rotation_degrees],
                    "fill": 0,
                    "expand": False,
                }
            )
        if self.crop_scale_min < 1:
            # The aspect ratio is kept: stretching would distort the very shapes being taught.
            applied.append(
                {
                    "name": "RandomResizedCrop",
                    "size": "original",
                    "scale": [self.crop_scale_min, 1.0],
                    "ratio": "original",
                }
            )
        if self.color_jitter > 0:
            # No hue shift: answers often name colours ("the red wire"), and a hue shift would
            # make them wrong.
            applied.append(
                {
                    "name": "ColorJitter",
                    "brightness": self.color_jitter,
                    "contrast": self.color_jitter,
                    "saturation": self.color_jitter,
                    "hue": 0.0,
                }
            )
        return applied

    def describe(self) -> dict[str, Any]:
        import torchvision

        return {
            "enabled": self.copies > 0,
            "copies": self.copies,
            "applied_to": "train",
            "library": f"torchvision.transforms.v2 {torchvision.__version__}",
            "transforms": self.transforms() if self.copies else [],
        }


def copy_seed(seed: int, sample_id: str, copy: int) -> int:
    digest = hashlib.sha256(f"{seed}\0{sample_id}\0{copy}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1  # manual_seed takes a non-negative int64


def _compose(plan: AugmentationPlan, width: int, height: int) -> Any:
    from torchvision.transforms import v2

    steps: list[Any] = []
    if plan.rotation_degrees > 0:
        steps.append(v2.RandomRotation(degrees=plan.rotation_degrees, fill=0))
    if plan.crop_scale_min < 1:
        aspect = width / height
        steps.append(
            v2.RandomResizedCrop(
                size=(height, width),
                scale=(plan.crop_scale_min, 1.0),
                ratio=(aspect, aspect),
                antialias=True,
            )
        )
    if plan.color_jitter > 0:
        jitter = plan.color_jitter
        steps.append(v2.ColorJitter(brightness=jitter, contrast=jitter, saturation=jitter))
    return v2.Compose(steps)


def augment_image(image: Any, plan: AugmentationPlan, seed: int) -> Any:
    """One augmented copy of a PIL RGB image, the same size as the original."""
    import torch

    transform = _compose(plan, *image.size)
    # devices=[]: only the CPU generator is forked, so no CUDA context is made here.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return transform(image)
