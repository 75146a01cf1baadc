"""Which base model a job trains, as a key that profiles and estimates are filed under, and the
shapes of the models whose size the estimator knows.

A job names its base model by a path or a hub id; costs depend on the model's shape, not on
where its files lie. Known shapes get their catalog key; anything else is filed under its own
name, so profiles learned from its runs still apply to the next job that names it. A registered
model under a name of its own gets its shape from its recorded config (shape_from_config).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from pathlib import PurePosixPath
from typing import Any

TINY = "tiny-qwen3-vl"
QWEN3_VL_2B = "qwen3-vl-2b"
QWEN3_VL_8B = "qwen3-vl-8b"

# (pattern on the model's name, shape key); first match wins.
_NAMED_SHAPES = (
    (re.compile(r"tiny-qwen3-vl", re.IGNORECASE), TINY),
    (re.compile(r"qwen3-vl-8b", re.IGNORECASE), QWEN3_VL_8B),
    (re.compile(r"qwen3-vl-2b", re.IGNORECASE), QWEN3_VL_2B),
)

# The projections of a Qwen3 decoder layer that LoRA can target ("all-linear" = all of them).
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
DEFAULT_TARGETS = ("q_proj", "v_proj")


def model_key_for(base_model: str) -> str:
    name = PurePosixPath(base_model.rstrip("/")).name or base_model
    for pattern, key in _NAMED_SHAPES:
        if pattern.search(name):
            return key
    return name.lower()[:128]


def lora_targets_key(target_modules: list[str] | str) -> str:
    """How runs and profiles file a LoRA target set: "all-linear" or the sorted names."""
    if isinstance(target_modules, str):
        return target_modules
    return ",".join(sorted(set(target_modules)))


@dataclass(frozen=True)
class ModelShape:
    """Sizes that decide memory and time. Activation bytes are per training sample of the
    reference size (one 448x448 image + 64 text tokens = 262 tokens; see bench_h200.py) in
    16-bit, calibrated against the bench's peak memory (tests/orchestrator/test_memory.py)."""

    key: str
    total_params: int
    vision_params: int  # vision tower + mergers
    layers: int
    hidden_size: int
    intermediate_size: int
    attention_heads: int
    kv_heads: int
    head_dim: int
    activation_bytes_qv: float  # q/v LoRA, no gradient checkpointing
    activation_bytes_all_linear: float  # all-linear LoRA, no gradient checkpointing
    activation_bytes_checkpointed: float  # either, with gradient checkpointing
    # The catalog shape whose bench figures this one's are scaled from; "" for a catalog shape.
    basis: str = ""

    @property
    def catalog_key(self) -> str:
        """The catalog shape to take bench figures from: this one, or its basis."""
        return self.basis or self.key

    @property
    def llm_params(self) -> int:
        """The language model: decoder, embeddings and output head."""
        return self.total_params - self.vision_params

    def _projection_dims(self) -> dict[str, tuple[int, int]]:
        h, i = self.hidden_size, self.intermediate_size
        q, kv = self.attention_heads * self.head_dim, self.kv_heads * self.head_dim
        return {
            "q_proj": (h, q),
            "k_proj": (h, kv),
            "v_proj": (h, kv),
            "o_proj": (q, h),
            "gate_proj": (h, i),
            "up_proj": (h, i),
            "down_proj": (i, h),
        }

    def lora_params(self, target_modules: list[str] | str, rank: int = 8) -> int:
        """Trainable LoRA parameters in the language model: rank x (in + out) per adapted
        projection per layer. Names that are not decoder projections add nothing here."""
        names = PROJECTIONS if target_modules == "all-linear" else set(target_modules)
        dims = self._projection_dims()
        per_layer = sum(rank * (dims[n][0] + dims[n][1]) for n in names if n in dims)
        return self.layers * per_layer

    @property
    def lora_params_qv(self) -> int:
        return self.lora_params(list(DEFAULT_TARGETS))

    @property
    def lora_params_all_linear(self) -> int:
        return self.lora_params("all-linear")


SHAPES: dict[str, ModelShape] = {
    # Built by worker/tiny_model.write_tiny_model(seed=0) and counted with
    # sum(p.numel() for p in model.parameters()): 288,992 in all, 149,344 under model.visual;
    # peft gave 3,584 (q/v) and 16,384 (all-linear) trainable parameters at r 8.
    # tests/worker/test_model_shapes.py recounts them. Activations are a rough figure (the tiny
    # model runs on CPUs, where memory never binds), not calibrated.
    TINY: ModelShape(
        TINY,
        total_params=288_992,
        vision_params=149_344,
        layers=2,
        hidden_size=64,
        intermediate_size=128,
        attention_heads=4,
        kv_heads=2,
        head_dim=16,
        activation_bytes_qv=2e6,
        activation_bytes_all_linear=3e6,
        activation_bytes_checkpointed=1e6,
    ),
    # Parameter counts as the bench built them from the published config.json
    # (bench/results/nvidia-h200-2026-11-28.json `params`: total less LoRA; vision = patch
    # embedding + blocks + mergers); activations fitted to the bench's peak memory.
    QWEN3_VL_2B: ModelShape(
        QWEN3_VL_2B,
        total_params=2_127_532_032,
        vision_params=404_226_048,
        layers=28,
        hidden_size=2048,
        intermediate_size=6144,
        attention_heads=16,
        kv_heads=8,
        head_dim=128,
        activation_bytes_qv=1.28e9,
        activation_bytes_all_linear=1.82e9,
        activation_bytes_checkpointed=0.60e9,
    ),
    QWEN3_VL_8B: ModelShape(
        QWEN3_VL_8B,
        total_params=8_767_123_696,
        vision_params=573_272_064,
        layers=36,
        hidden_size=4096,
        intermediate_size=12288,
        attention_heads=32,
        kv_heads=8,
        head_dim=128,
        activation_bytes_qv=2.36e9,
        activation_bytes_all_linear=3.71e9,
        activation_bytes_checkpointed=0.65e9,
    ),
}


def shape_for(base_model: str) -> ModelShape | None:
    """The catalog shape of a base model, or None when its size is not known here."""
    return SHAPES.get(model_key_for(base_model))


# A decoder's dimensions in config.json (its text_config for a vision-language model).
_DECODER_FIELDS = (
    "num_hidden_layers",
    "hidden_size",
    "intermediate_size",
    "num_attention_heads",
    "num_key_value_heads",
)


def _positive_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def shape_from_config(name: str, config: dict[str, Any], parameter_count: int) -> ModelShape | None:
    """A registered model's shape, from its recorded config.json and parameter count, filed
    under its own name: a catalog shape's when the decoder's dimensions are the same (a model
    registered under a name of its own); otherwise its own dimensions, with the language model
    counted from them, the rest of the parameters as vision, and activations scaled from the
    nearest catalog shape by layers x hidden size. None when the config lacks the decoder's
    dimensions."""
    text = config.get("text_config")
    text = text if isinstance(text, dict) else config
    dims = [_positive_int(text.get(field)) for field in _DECODER_FIELDS]
    if any(d is None for d in dims):
        return None
    layers, hidden, intermediate, heads, kv_heads = (int(d or 0) for d in dims)
    head_dim = _positive_int(text.get("head_dim")) or hidden // heads
    mine = (layers, hidden, intermediate, heads, kv_heads, head_dim)
    for shape in SHAPES.values():
        theirs = (
            shape.layers,
            shape.hidden_size,
            shape.intermediate_size,
            shape.attention_heads,
            shape.kv_heads,
            shape.head_dim,
        )
        if theirs == mine:
            return replace(shape, key=name, basis=shape.key)
    q, kv = heads * head_dim, kv_heads * head_dim
    decoder = layers * (2 * hidden * q + 2 * hidden * kv + 3 * hidden * intermediate)
    tied = config.get("tie_word_embeddings", text.get("tie_word_embeddings", False)) is True
    embeddings = (_positive_int(text.get("vocab_size")) or 0) * hidden * (1 if tied else 2)
    llm = decoder + embeddings
    total = max(parameter_count, llm)
    basis = min(SHAPES.values(), key=lambda s: abs(math.log(llm / s.llm_params)))
    scale = layers * hidden / (basis.layers * basis.hidden_size)
    return ModelShape(
        name,
        total_params=total,
        vision_params=total - llm,
        layers=layers,
        hidden_size=hidden,
        intermediate_size=intermediate,
        attention_heads=heads,
        kv_heads=kv_heads,
        head_dim=head_dim,
        activation_bytes_qv=basis.activation_bytes_qv * scale,
        activation_bytes_all_linear=basis.activation_bytes_all_linear * scale,
        activation_bytes_checkpointed=basis.activation_bytes_checkpointed * scale,
        basis=basis.key,
    )
