"""Turn an extracted data set into the tokenized training artifact of the preprocess phase.

The data set is read by `orchestrator.dataformats` (the code that checked the upload), split
into train and validation by seed (or, when the job names a validation data set, trained on
whole, with every sample of that set held out), the training samples get augmented copies, and
every sample is tokenized once with the model's processor and chat template.

Artifact layout (out_dir):
    samples.pt       torch.save of a list of dicts of tensors: input_ids, attention_mask,
                     labels, mm_token_type_ids (1-D, same length), image_grid_thw (images x 3),
                     and the images either as png_images (PNGs of the processor's resized 8-bit
                     images, see worker.recipe.pixels) or, when those would not give back the
                     exact patches, pixel_values (patches x patch_dim, fp32). Originals first
                     (data set order; a validation data set's samples after the training
                     set's), then the augmented copies. load_artifact returns every
                     sample with pixel_values.
    image_processor/ the image processor's saved config, which rebuilds pixel_values
    manifest.json    see `_manifest`: train/val indices, validation, augmentation, image size,
                     pixel storage, token counts
"""

from __future__ import annotations

import io
import json
import logging
import random
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from orchestrator.base_models import DEFAULT_MAX_IMAGE_TOKENS
from orchestrator.dataformats import DirectorySource, ImagePart, Problems, Sample, read_dataset
from orchestrator.errors import InvalidDataset, InvalidRequest
from orchestrator.hyperparameters import Hyperparameters
from orchestrator.layout import MANIFEST_FILE
from worker.recipe import ARTIFACT_FORMAT, ARTIFACT_FORMATS_READ
from worker.recipe.augment import AugmentationPlan, augment_image, copy_seed
from worker.recipe.data import IGNORE_INDEX
from worker.recipe.pixels import (
    IMAGE_PROCESSOR_DIR,
    compact_sample,
    expand_sample,
    load_image_processor,
)

logger = logging.getLogger(__name__)

SAMPLES_FILE = "samples.pt"
DEFAULT_MAX_LENGTH = 4096
# Names a validation data set's samples apart from the training set's, which may share names.
VALIDATION_PREFIX = "validation:"
SMALL_DATASET = 20  # up to this many samples, a default validation split holds out only a few
MAX_SMALL_VALIDATION = 3


class ChatEncoder:
    """Tokenizes a conversation with the model's processor and chat template, labels on the
    assistant turns only.

    The rendered conversation is cut where each trained answer starts and ends, and every piece
    is tokenized on its own: the label boundary is then exact, and the prompt ids are the very
    ids generation sees. Images expand inside the pieces that hold them; nothing is truncated.
    """

    def __init__(self, processor: Any, min_pixels: int, max_pixels: int, max_length: int):
        self.processor = processor
        self.size = {"shortest_edge": min_pixels, "longest_edge": max_pixels}
        self.max_length = max_length
        tokenizer = processor.tokenizer
        self.image_token = processor.image_token
        self.image_token_id = int(tokenizer.convert_tokens_to_ids(self.image_token))
        pad = tokenizer.pad_token_id
        self.pad_token_id = int(pad if pad is not None else tokenizer.eos_token_id)

    def _render(self, messages: list[dict[str, Any]], prompt: bool = False) -> str:
        text: str = self.processor.apply_chat_template(
            messages, add_generation_prompt=prompt, tokenize=False
        )
        return text

    @staticmethod
    def _messages(sample: Sample) -> list[dict[str, Any]]:
        messages = []
        for turn in sample.turns:
            if all(isinstance(p, str) for p in turn.parts):
                content: Any = turn.text
            else:
                content = [
                    {"type": "image"} if isinstance(p, ImagePart) else {"type": "text", "text": p}
                    for p in turn.parts
                ]
            messages.append({"role": turn.role, "content": content})
        return messages

    def segments(self, sample: Sample) -> list[tuple[str, bool]]:
        """(text, trained) pieces of the rendered conversation, in order."""
        messages = self._messages(sample)
        full = self._render(messages)
        pieces, done = [], 0
        for index, turn in enumerate(sample.turns):
            if turn.role != "assistant" or not turn.train:
                continue
            before = self._render(messages[:index], prompt=True)
            through = self._render(messages[: index + 1])
            if not (full.startswith(through) and through.startswith(before)):
                raise ValueError(
                    "the model's chat template renders earlier turns differently once later "
                    "ones follow, so assistant turns cannot be located for the loss mask"
                )
            # The newline after the end-of-turn token is the template's, not the answer's.
            answer = through[len(before) :].rstrip()
            pieces += [(full[done : len(before)], False), (answer, True)]
            done = len(before) + len(answer)
        pieces.append((full[done:], False))
        return [(text, trained) for text, trained in pieces if text]

    def encode(
        self, sample: Sample, images: list[Any], problems: Problems
    ) -> dict[str, Any] | None:
        import torch

        pieces = self.segments(sample)
        if sum(text.count(self.image_token) for text, _ in pieces) != len(images):
            problems.add(
                sample.id,
                "invalid_row",
                f"{sample.id}: its text holds the model's image token {self.image_token}",
            )
            return None
        ids, types, labels, pixels, grids = [], [], [], [], []
        used = 0
        for text, trained in pieces:
            count = text.count(self.image_token)
            kwargs = {"images": images[used : used + count], "size": self.size} if count else {}
            enc = self.processor(text=[text], return_tensors="pt", **kwargs)
            used += count
            piece_ids, piece_types = enc["input_ids"][0], enc["mm_token_type_ids"][0]
            piece_labels = (
                piece_ids.clone() if trained else torch.full_like(piece_ids, IGNORE_INDEX)
            )
            piece_labels[piece_types != 0] = IGNORE_INDEX  # never train on image tokens
            ids.append(piece_ids)
            types.append(piece_types)
            labels.append(piece_labels)
            if count:
                pixels.append(enc["pixel_values"])
                grids.append(enc["image_grid_thw"])
        input_ids = torch.cat(ids)
        if input_ids.numel() > self.max_length:
            image_tokens = int((input_ids == self.image_token_id).sum())
            problems.add(
                sample.id,
                "sample_too_long",
                f"{sample.id}: {input_ids.numel()} tokens ({image_tokens} for images), "
                f"over max_length {self.max_length}; lower max_pixels or shorten it "
                "(samples are never cut, so image tokens stay whole)",
            )
            return None
        return {
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            "labels": torch.cat(labels),
            "mm_token_type_ids": torch.cat(types),
            "pixel_values": torch.cat(pixels),
            "image_grid_thw": torch.cat(grids),
        }


def split_validation(
    num_samples: int, requested: int | None, seed: int
) -> tuple[list[int], list[int], dict[str, Any]]:
    """(train, val, the manifest's `validation` record): a seeded choice, made before
    augmentation so no augmented copy of a validation sample is ever trained on."""
    if requested and requested >= num_samples:
        raise InvalidRequest(
            f"validation_samples ({requested}) must leave at least one of the "
            f"{num_samples} samples to train on",
            param="validation_samples",
        )
    if requested == 0 or num_samples < 2:
        why = "validation_samples is 0" if requested == 0 else "one sample cannot be split"
        return (
            list(range(num_samples)),
            [],
            {
                "count": 0,
                "strategy": "none",
                "note": f"no validation: {why}; val_loss and evaluation are unavailable",
            },
        )
    if requested is not None:
        count, note = requested, f"{requested} samples held out as requested"
    elif num_samples <= SMALL_DATASET:
        count = min(MAX_SMALL_VALIDATION, max(1, round(0.15 * num_samples)))
        note = (
            f"only {num_samples} samples: {count} held out for validation by default, too "
            "few for a reliable score; set validation_samples to choose (0 for none)"
        )
    else:
        count = max(1, round(0.1 * num_samples))
        note = f"10% of {num_samples} samples held out for validation by default"
    val = sorted(random.Random(seed).sample(range(num_samples), count))
    held = set(val)
    train = [i for i in range(num_samples) if i not in held]
    return train, val, {"count": count, "strategy": "seeded_random", "seed": seed, "note": note}


def validation_from_dataset(
    num_train: int, num_val: int, dataset_id: str | None, dataset_format: str
) -> tuple[list[int], list[int], dict[str, Any]]:
    """(train, val, the manifest's `validation` record) when a validation data set's samples
    follow the training set's: every training sample trains, every validation sample is held
    out."""
    named = f"validation data set {dataset_id}" if dataset_id else "the validation data set"
    return (
        list(range(num_train)),
        list(range(num_train, num_train + num_val)),
        {
            "count": num_val,
            "strategy": "validation_dataset",
            "dataset_id": dataset_id,
            "dataset_format": dataset_format,
            "note": f"all {num_val} samples of {named} held out; all {num_train} samples of "
            "the training data set train",
        },
    )


def _read_validation(validation_dir: Path) -> tuple[str, list[Sample]]:
    """A validation data set's format and samples, each named as the validation set's (in a
    problem found with it, in the evaluation's answers)."""
    try:
        dataset = read_dataset(DirectorySource(Path(validation_dir)))
    except InvalidDataset as exc:
        raise _in_validation_set(exc) from exc
    samples = [replace(s, id=f"{VALIDATION_PREFIX}{s.id}") for s in dataset.samples]
    return dataset.format, samples


def _in_validation_set(exc: InvalidDataset) -> InvalidDataset:
    """The same refusal, its rows named as the validation data set's."""
    details = [
        {**detail, "param": f"{VALIDATION_PREFIX}{detail.get('param')}"}
        for detail in exc.details or []
    ]
    return InvalidDataset(
        f"the validation data set: {exc.message}",
        param=f"{VALIDATION_PREFIX}{exc.param}" if exc.param else "validation_dataset_id",
        code=exc.code,
        details=details or None,
    )


def image_size_bounds(
    image_processor: Any, min_pixels: int | None, max_pixels: int | None
) -> dict[str, Any]:
    """Pixel bounds for the processor; the upper one bounds tokens per image. Without a
    max_pixels the processor's own cap applies, but never above DEFAULT_MAX_IMAGE_TOKENS:
    Qwen3-VL's processor allows ~16k tokens per image, which overflows max_length (and GPU
    memory) with ordinary photos."""
    size = image_processor.size
    tile = image_processor.patch_size * image_processor.merge_size  # pixels per token side
    default_upper = min(int(size["longest_edge"]), DEFAULT_MAX_IMAGE_TOKENS * tile * tile)
    upper = max_pixels or default_upper
    lower = min_pixels or min(int(size["shortest_edge"]), upper)
    if lower > upper:
        raise InvalidRequest(
            f"min_pixels ({lower}) exceeds the model's max_pixels ({upper})", param="min_pixels"
        )
    return {
        "min_pixels": lower,
        "max_pixels": upper,
        "max_image_tokens": upper // (tile * tile),
        "source": {
            "min_pixels": "hyperparameters" if min_pixels else "processor",
            "max_pixels": "hyperparameters"
            if max_pixels
            else (
                "processor" if default_upper == int(size["longest_edge"]) else "relaytune_default"
            ),
        },
    }


def _decode_images(sample: Sample, problems: Problems) -> list[Any] | None:
    from PIL import Image, UnidentifiedImageError

    images = []
    for image in sample.images:
        try:
            with Image.open(io.BytesIO(image.data)) as opened:
                images.append(opened.convert("RGB"))
        except (UnidentifiedImageError, OSError) as exc:
            problems.add(image.name, "invalid_image", f"{image.name}: not readable ({exc})")
            return None
    return images


def _token_record(
    sample_id: str, encoded: dict[str, Any], image_token_id: int, source: int, copy: int
) -> dict[str, Any]:
    return {
        "id": sample_id,
        "source": source,
        "copy": copy,
        "images": int(encoded["image_grid_thw"].shape[0]),
        "tokens": int(encoded["input_ids"].numel()),
        "label_tokens": int((encoded["labels"] != IGNORE_INDEX).sum()),
        "image_tokens": int((encoded["input_ids"] == image_token_id).sum()),
    }


def _manifest(
    *,
    dataset_format: str,
    records: list[dict[str, Any]],
    train: list[int],
    val: list[int],
    validation: dict[str, Any],
    augmentation: dict[str, Any],
    image_size: dict[str, Any],
    hp: Hyperparameters,
    model_dir: str,
    max_length: int,
    pad_token_id: int,
    pixel_storage: dict[str, Any],
) -> dict[str, Any]:
    return {
        "format": ARTIFACT_FORMAT,
        "dataset_format": dataset_format,
        "num_samples": len(records),
        "files": [r["id"] for r in records],  # per sample, for evaluation's answers
        "train": train,
        "val": val,
        "seed": hp.seed,
        "validation": validation,
        "augmentation": augmentation,
        "model": Path(str(model_dir).rstrip("/")).name,
        "max_length": max_length,
        "image_size": image_size,
        "pad_token_id": pad_token_id,
        "samples_file": SAMPLES_FILE,
        "pixel_storage": pixel_storage,
        "token_counts": {
            "total": sum(r["tokens"] for r in records),
            "label": sum(r["label_tokens"] for r in records),
            "image": sum(r["image_tokens"] for r in records),
            "max_sample": max(r["tokens"] for r in records),
            "per_sample": records,
        },
    }


def _compact_images(
    samples: list[dict[str, Any]], processor: Any, out_dir: Path
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Samples with their images stored compactly where that is exact, and the manifest's
    record of it. Checked with the image processor as saved in the artifact, the very one
    that rebuilds the patches on the training workers."""
    processor.image_processor.save_pretrained(out_dir / IMAGE_PROCESSOR_DIR)
    image_processor = load_image_processor(out_dir)
    compacted = [compact_sample(sample, image_processor) for sample in samples]
    kept = sum("pixel_values" in sample for sample in compacted)
    if kept:
        logger.warning(
            "%d of %d samples keep fp32 patches: their resized 8-bit images do not "
            "give back the processor's patches exactly",
            kept,
            len(samples),
        )
    fp32_bytes = sum(s["pixel_values"].numel() * 4 for s in samples)
    return compacted, {
        "encoding": "png_resized_uint8",
        "image_processor": IMAGE_PROCESSOR_DIR,
        "compact_samples": len(samples) - kept,
        "fp32_samples": kept,
        "fp32_patch_bytes": fp32_bytes,
    }


def build_artifact(
    dataset_dir: Path,
    model_dir: str,
    out_dir: Path,
    *,
    hyperparameters: Hyperparameters,
    max_length: int = DEFAULT_MAX_LENGTH,
    compact_images: bool = True,
    validation_dir: Path | None = None,
    validation_dataset_id: str | None = None,
) -> dict[str, Any]:
    """Check, split, augment and tokenize dataset_dir with model_dir's processor into out_dir;
    return the manifest. Bad rows and over-long samples raise one InvalidDataset naming all.
    compact_images=False stores fp32 patches instead of the images that rebuild them.
    validation_dir: an extracted validation data set (validation_dataset_id), held out whole
    instead of a split of dataset_dir, tokenized the same way and never augmented."""
    import torch
    from transformers import AutoProcessor

    hp = hyperparameters
    dataset = read_dataset(DirectorySource(Path(dataset_dir)))
    processor = AutoProcessor.from_pretrained(model_dir)
    image_size = image_size_bounds(processor.image_processor, hp.min_pixels, hp.max_pixels)
    encoder = ChatEncoder(processor, image_size["min_pixels"], image_size["max_pixels"], max_length)
    all_samples = list(dataset.samples)
    if validation_dir is None:
        train, val, validation = split_validation(len(all_samples), hp.validation_samples, hp.seed)
    else:
        validation_format, held_out = _read_validation(validation_dir)
        train, val, validation = validation_from_dataset(
            len(all_samples), len(held_out), validation_dataset_id, validation_format
        )
        all_samples += held_out
    plan = AugmentationPlan.from_hyperparameters(hp.augmentation)

    trained = set(train)
    problems = Problems()
    originals, records, augmented, copies_made = [], [], [], []
    for index, sample in enumerate(all_samples):
        images = _decode_images(sample, problems)
        encoded = encoder.encode(sample, images, problems) if images is not None else None
        originals.append(encoded)
        if encoded is not None:
            records.append(_token_record(sample.id, encoded, encoder.image_token_id, index, 0))
        # A sample that failed is reported once, not once more for each of its copies.
        if encoded is None or index not in trained:
            continue
        for copy in range(1, plan.copies + 1):
            seed = copy_seed(hp.seed, sample.id, copy)
            varied = [augment_image(image, plan, seed) for image in images or []]
            encoded = encoder.encode(sample, varied, problems)
            if encoded is not None:
                augmented.append(encoded)
                record = _token_record(
                    f"{sample.id}~aug{copy}", encoded, encoder.image_token_id, index, copy
                )
                copies_made.append({**record, "seed": seed})
    problems.raise_if_any()

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    samples = [s for s in originals if s is not None] + augmented
    pixel_storage = {
        "encoding": "fp32_patches",
        "fp32_patch_bytes": sum(s["pixel_values"].numel() * 4 for s in samples),
    }
    if compact_images:
        samples, pixel_storage = _compact_images(samples, processor, out_dir)
    first_copy = len(originals)
    manifest = _manifest(
        dataset_format=dataset.format,
        records=records + copies_made,
        train=train + list(range(first_copy, len(samples))),
        val=val,
        validation=validation,
        augmentation=plan.describe() | {"augmented_samples": len(augmented)},
        image_size=image_size,
        hp=hp,
        model_dir=model_dir,
        max_length=max_length,
        pad_token_id=encoder.pad_token_id,
        pixel_storage=pixel_storage,
    )
    torch.save(samples, out_dir / SAMPLES_FILE)
    # The manifest goes last: a directory with a manifest holds a complete artifact.
    (out_dir / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    logger.info(
        "artifact: %s, %d samples (%d augmented, %d val), %d tokens -> %s",
        dataset.format,
        len(samples),
        len(augmented),
        len(val),
        manifest["token_counts"]["total"],
        out_dir,
    )
    return manifest


def load_artifact(artifact_dir: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Read back (manifest, samples) written by build_artifact, every sample with its
    pixel_values (rebuilt from the stored images where the artifact holds those)."""
    import torch

    artifact_dir = Path(artifact_dir)
    started = time.perf_counter()
    manifest = json.loads((artifact_dir / MANIFEST_FILE).read_text(encoding="utf-8"))
    if manifest.get("format") not in ARTIFACT_FORMATS_READ:
        raise InvalidDataset(
            f"artifact format {manifest.get('format')!r} is not one of {ARTIFACT_FORMATS_READ}",
            param=str(artifact_dir / MANIFEST_FILE),
        )
    # weights_only: the file holds only tensors in lists and dicts, so no pickled code runs.
    samples = torch.load(artifact_dir / manifest["samples_file"], weights_only=True)
    if len(samples) != manifest["num_samples"]:
        raise InvalidDataset(
            f"samples file holds {len(samples)} samples, manifest says {manifest['num_samples']}",
            param=str(artifact_dir / manifest["samples_file"]),
        )
    loaded = time.perf_counter()
    if any("pixel_values" not in sample for sample in samples):
        image_processor = load_image_processor(artifact_dir)
        samples = [expand_sample(sample, image_processor) for sample in samples]
    logger.info(
        "artifact %s: %d samples loaded in %.2fs, patches rebuilt in %.2fs",
        manifest["format"],
        len(samples),
        loaded - started,
        time.perf_counter() - loaded,
    )
    return manifest, samples
