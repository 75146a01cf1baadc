"""Turn a dataset directory (images/ + annotations.json) into a tokenized training artifact.

Artifact layout (out_dir):
    samples.pt     torch.save of a list of dicts of tensors, sorted by image file name:
                   input_ids, attention_mask, labels, mm_token_type_ids  (1-D, same length)
                   pixel_values (patches x patch_dim), image_grid_thw (1 x 3)
    manifest.json  format, num_samples, files, train/val indices, seed, model, pad_token_id,
                   token counts
"""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path
from typing import Any

from orchestrator.errors import InvalidDataset
from worker.recipe import ARTIFACT_FORMAT

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100
SAMPLES_FILE = "samples.pt"
MANIFEST_FILE = "manifest.json"
DEFAULT_MAX_LENGTH = 4096
# Qwen's processors default to up to 16k tokens per image; uncapped pixels are the most common
# cause of running out of GPU memory, so images are scaled down to at most this many tokens.
DEFAULT_MAX_IMAGE_TOKENS = 1280
END_TOKEN = "<|im_end|>"


def _read_annotations(dataset_dir: Path) -> dict[str, dict[str, str]]:
    path = dataset_dir / "annotations.json"
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise InvalidDataset("annotations.json is missing", param="annotations.json") from exc
    except json.JSONDecodeError as exc:
        raise InvalidDataset(f"annotations.json is not JSON: {exc}", param=path.name) from exc
    if not isinstance(raw, dict) or not raw:
        raise InvalidDataset("annotations.json must map image names to rows", param=path.name)
    for name, row in raw.items():
        ok = isinstance(row, dict) and all(
            isinstance(row.get(k), str) and row[k].strip() for k in ("question", "answer")
        )
        if not ok:
            raise InvalidDataset(f"{name}: needs non-empty 'question' and 'answer'", param=name)
        if Path(name).name != name or not (dataset_dir / "images" / name).is_file():
            raise InvalidDataset(f"{name}: no such file under images/", param=name)
    return raw


def _load_image(path: Path) -> Any:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError) as exc:
        raise InvalidDataset(f"{path.name}: not a readable image ({exc})", param=path.name) from exc


def _image_size_bounds(image_processor: Any, max_image_tokens: int) -> dict[str, int]:
    """The processor's pixel bounds, with the upper one lowered to max_image_tokens tokens."""
    tile = image_processor.patch_size * image_processor.merge_size  # pixels per token side
    longest = min(int(image_processor.size["longest_edge"]), max_image_tokens * tile * tile)
    shortest = min(int(image_processor.size["shortest_edge"]), longest)
    return {"shortest_edge": shortest, "longest_edge": longest}


def _encode_sample(
    processor: Any,
    name: str,
    image: Any,
    question: str,
    answer: str,
    max_length: int,
    image_size: dict[str, int],
) -> dict[str, Any]:
    """Tokenize one QA pair: prompt (with image) masked, answer + end token trained on."""
    import torch

    user = {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}
    prompt = processor.apply_chat_template([user], add_generation_prompt=True, tokenize=False)
    enc = processor(text=[prompt], images=[image], size=image_size, return_tensors="pt")
    prompt_ids = enc["input_ids"][0]
    # The answer is tokenized on its own so that the label boundary is exact and the prompt ids
    # are the very ids that generation will see; "\n" closes the turn as the chat template does.
    tokenizer = processor.tokenizer
    answer_ids = tokenizer(answer + END_TOKEN, add_special_tokens=False, return_tensors="pt")[
        "input_ids"
    ][0]
    tail_ids = tokenizer("\n", add_special_tokens=False, return_tensors="pt")["input_ids"][0]

    # Never truncate through image tokens: a prompt that does not fit is an error, and only the
    # end of the answer may be cut.
    room = max_length - len(prompt_ids)
    if room < 1:
        raise InvalidDataset(
            f"{name}: prompt with image is {len(prompt_ids)} tokens, over max_length {max_length}",
            param=name,
        )
    if len(answer_ids) > room:
        logger.warning("%s: answer truncated from %d to %d tokens", name, len(answer_ids), room)
        answer_ids = answer_ids[:room]
    tail_ids = tail_ids[: room - len(answer_ids)]

    input_ids = torch.cat([prompt_ids, answer_ids, tail_ids])
    labels = torch.full_like(input_ids, IGNORE_INDEX)
    labels[len(prompt_ids) : len(prompt_ids) + len(answer_ids)] = answer_ids
    mm_types = torch.zeros_like(input_ids)
    mm_types[: len(prompt_ids)] = enc["mm_token_type_ids"][0]
    return {
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "labels": labels,
        "mm_token_type_ids": mm_types,
        "pixel_values": enc["pixel_values"],
        "image_grid_thw": enc["image_grid_thw"],
    }


def split_val(num_samples: int, seed: int) -> tuple[list[int], list[int]]:
    """Seeded choice of max(1, N // 5) validation indices; train on the rest.

    With a single sample there is no rest, so that sample is both trained on and validated.
    """
    k = max(1, num_samples // 5)
    val = sorted(random.Random(seed).sample(range(num_samples), k))
    train = [i for i in range(num_samples) if i not in val] or list(range(num_samples))
    return train, val


def build_artifact(
    dataset_dir: Path,
    model_dir: str,
    out_dir: Path,
    *,
    seed: int,
    max_length: int = DEFAULT_MAX_LENGTH,
    max_image_tokens: int = DEFAULT_MAX_IMAGE_TOKENS,
) -> dict[str, Any]:
    """Tokenize dataset_dir with model_dir's processor into out_dir; return the manifest."""
    import torch
    from transformers import AutoProcessor

    dataset_dir, out_dir = Path(dataset_dir), Path(out_dir)
    annotations = _read_annotations(dataset_dir)
    processor = AutoProcessor.from_pretrained(model_dir)
    tokenizer = processor.tokenizer
    image_token_id = tokenizer.convert_tokens_to_ids(processor.image_token)
    pad_token_id = tokenizer.pad_token_id
    if pad_token_id is None:
        pad_token_id = tokenizer.eos_token_id

    image_size = _image_size_bounds(processor.image_processor, max_image_tokens)
    files = sorted(annotations)
    samples = []
    for name in files:
        row = annotations[name]
        image = _load_image(dataset_dir / "images" / name)
        sample = _encode_sample(
            processor,
            name,
            image,
            row["question"].strip(),
            row["answer"].strip(),
            max_length,
            image_size,
        )
        samples.append(sample)

    train, val = split_val(len(samples), seed)
    per_sample: list[dict[str, Any]] = [
        {
            "file": name,
            "tokens": int(s["input_ids"].numel()),
            "label_tokens": int((s["labels"] != IGNORE_INDEX).sum()),
            "image_tokens": int((s["input_ids"] == image_token_id).sum()),
        }
        for name, s in zip(files, samples, strict=True)
    ]
    manifest: dict[str, Any] = {
        "format": ARTIFACT_FORMAT,
        "num_samples": len(samples),
        "files": files,
        "train": train,
        "val": val,
        "seed": seed,
        "model": Path(str(model_dir).rstrip("/")).name,
        "max_length": max_length,
        "image_size": image_size,
        "pad_token_id": int(pad_token_id),
        "samples_file": SAMPLES_FILE,
        "token_counts": {
            "total": sum(p["tokens"] for p in per_sample),
            "label": sum(p["label_tokens"] for p in per_sample),
            "image": sum(p["image_tokens"] for p in per_sample),
            "max_sample": max(p["tokens"] for p in per_sample),
            "per_sample": per_sample,
        },
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save(samples, out_dir / SAMPLES_FILE)
    # The manifest goes last: a directory with a manifest holds a complete artifact.
    (out_dir / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    logger.info(
        "artifact: %d samples (%d val), %d tokens -> %s",
        len(samples),
        len(val),
        manifest["token_counts"]["total"],
        out_dir,
    )
    return manifest


def load_artifact(artifact_dir: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Read back (manifest, samples) written by build_artifact."""
    import torch

    artifact_dir = Path(artifact_dir)
    manifest = json.loads((artifact_dir / MANIFEST_FILE).read_text(encoding="utf-8"))
    if manifest.get("format") != ARTIFACT_FORMAT:
        raise InvalidDataset(
            f"artifact format {manifest.get('format')!r} is not {ARTIFACT_FORMAT!r}",
            param=str(artifact_dir / MANIFEST_FILE),
        )
    # weights_only: the file holds only tensors in lists and dicts, so no pickled code runs.
    samples = torch.load(artifact_dir / manifest["samples_file"], weights_only=True)
    if len(samples) != manifest["num_samples"]:
        raise InvalidDataset(
            f"samples file holds {len(samples)} samples, manifest says {manifest['num_samples']}",
            param=str(artifact_dir / manifest["samples_file"]),
        )
    return manifest, samples
