"""A tiny random Qwen3-VL checkpoint with the real architecture, built offline.

No weights can be downloaded on these machines, so tests and `relaytune up` exercise the real
loading code (`AutoModelForImageTextToText` / `AutoProcessor`) on this checkpoint instead. The
weights are random; the tokenizer is a byte-level BPE trained here on a small built-in corpus.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

# Written last: its presence means every other file of the checkpoint is complete.
COMPLETE_MARKER = "relaytune_tiny_model.json"

SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]

# Qwen-style template: an image part becomes one <|image_pad|>, which the processor expands to
# the number of merged patches of that image.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_SUBJECTS = ["capacitor", "resistor", "solder joint", "chip", "connector", "trace", "board"]
_DEFECTS = ["bulging", "cracked", "burnt", "missing", "scratched", "bent", "corroded"]
_POSITIONS = ["top left", "top right", "bottom left", "bottom right", "center", "left", "right"]
_CHINESE = [
    "图中异常的部件是哪个?",
    "右上角的电容鼓包",
    "左下角的焊点开裂",
    "电路板上有缺陷吗?",
    "没有发现异常",
    "左上角 右下角 中间",
]


def _corpus() -> list[str]:
    """Deterministic QA-style lines about circuit boards, defects, digits and positions."""
    lines = list(_CHINESE)
    for i, subject in enumerate(_SUBJECTS):
        for j, position in enumerate(_POSITIONS):
            defect = _DEFECTS[(i + j) % len(_DEFECTS)]
            lines.append(f"Which part is abnormal? The {defect} {subject} in the {position}.")
            lines.append(f"Where is the defect? {position.capitalize()}.")
            lines.append(f"Which corner is the defect in? {position}")
            lines.append(f"Count: {i * 7 + j} defects, {j} ok, case{i}{j}.jpg")
    lines.append("0 1 2 3 4 5 6 7 8 9 10 100 yes no none unknown")
    return lines


def _train_tokenizer(vocab_size: int) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_corpus(), trainer=trainer)
    return tokenizer


def _build_processor(vocab_size: int) -> Any:
    from transformers import (
        PreTrainedTokenizerFast,
        Qwen2VLImageProcessor,
        Qwen3VLProcessor,
        Qwen3VLVideoProcessor,
    )

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=_train_tokenizer(vocab_size),
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        chat_template=CHAT_TEMPLATE,
    )
    # patch 16 x merge 2 = 32-pixel tiles: a 64x64 image gives 4 image tokens, 128x128 gives 16.
    image_processor = Qwen2VLImageProcessor(
        patch_size=16,
        temporal_patch_size=2,
        merge_size=2,
        min_pixels=64 * 64,
        max_pixels=128 * 128,
    )
    video_processor = Qwen3VLVideoProcessor(
        patch_size=16,
        temporal_patch_size=2,
        merge_size=2,
        size={"shortest_edge": 64 * 64, "longest_edge": 4 * 128 * 128},
    )
    return Qwen3VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=CHAT_TEMPLATE,
    )


# The tiny shapes of the real architecture (also the GPU bench's CPU smoke preset).
TEXT_SHAPES: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "max_position_embeddings": 4096,
    # mrope_section sums to head_dim / 2 (temporal, height, width rotary halves).
    "rope_parameters": {
        "rope_type": "default",
        "rope_theta": 10000.0,
        "mrope_section": [2, 3, 3],
        "mrope_interleaved": True,
    },
}
VISION_SHAPES: dict[str, Any] = {
    "depth": 2,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_heads": 2,
    "patch_size": 16,
    "spatial_merge_size": 2,
    "temporal_patch_size": 2,
    "out_hidden_size": 64,  # must equal the text hidden size
    "num_position_embeddings": 256,  # a perfect square: positions are interpolated on a grid
    "deepstack_visual_indexes": [0, 1],
}


def _build_config(tokenizer: Any) -> Any:
    from transformers import Qwen3VLConfig

    ids = {tok: tokenizer.convert_tokens_to_ids(tok) for tok in SPECIAL_TOKENS}
    text_config = {
        **TEXT_SHAPES,
        "vocab_size": len(tokenizer),
        "pad_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
    }
    vision_config = dict(VISION_SHAPES)
    return Qwen3VLConfig(
        text_config=text_config,
        vision_config=vision_config,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )


def is_complete(out_dir: Path) -> bool:
    return (Path(out_dir) / COMPLETE_MARKER).is_file()


def write_tiny_model(out_dir: Path, seed: int = 0, vocab_size: int = 512) -> Path:
    """Write a tiny random Qwen3-VL checkpoint (model + processor) into out_dir; return out_dir.

    Deterministic for a given seed; returns at once if out_dir already holds a complete one.
    """
    import torch
    from transformers import GenerationConfig, Qwen3VLForConditionalGeneration

    out_dir = Path(out_dir)
    if is_complete(out_dir):
        return out_dir
    out_dir.mkdir(parents=True, exist_ok=True)

    processor = _build_processor(vocab_size)
    tokenizer = processor.tokenizer
    config = _build_config(tokenizer)

    # fork_rng keeps the caller's global RNG untouched while the init stays seeded.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen3VLForConditionalGeneration(config)
    # Generation stops at the end of the assistant turn, as with the real Qwen checkpoints.
    model.generation_config = GenerationConfig(
        eos_token_id=config.text_config.eos_token_id,
        pad_token_id=config.text_config.pad_token_id,
        do_sample=False,
    )
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)

    n_params = sum(p.numel() for p in model.parameters())
    marker = {"seed": seed, "vocab_size": len(tokenizer), "parameters": n_params}
    (out_dir / COMPLETE_MARKER).write_text(json.dumps(marker, indent=2) + "\n")
    logger.info("wrote tiny Qwen3-VL (%d parameters, seed %d) to %s", n_params, seed, out_dir)
    return out_dir
