"""What is built: Qwen3-VL config shapes by preset, and which modules get LoRA."""

from __future__ import annotations

from typing import Any

from worker.tiny_model import TEXT_SHAPES, VISION_SHAPES

# Token ids of the published Qwen3-VL checkpoints (vocab 151936).
QWEN_IDS = {
    "vision_start_token_id": 151652,
    "vision_end_token_id": 151653,
    "image_token_id": 151655,
    "video_token_id": 151656,
}

# Qwen3-VL-2B-Instruct and Qwen3-VL-8B-Instruct config.json (text_config / vision_config), as
# published on the Hugging Face Hub. Only the fields that decide shapes and cost are repeated.
PRESETS: dict[str, dict[str, Any]] = {
    "2b": {
        "source": "Qwen/Qwen3-VL-2B-Instruct config.json",
        "text": {
            "vocab_size": 151936,
            "hidden_size": 2048,
            "intermediate_size": 6144,
            "num_hidden_layers": 28,
            "num_attention_heads": 16,
            "num_key_value_heads": 8,
            "head_dim": 128,
            "max_position_embeddings": 262144,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 5000000.0,
                "mrope_section": [24, 20, 20],
                "mrope_interleaved": True,
            },
        },
        "vision": {
            "depth": 24,
            "hidden_size": 1024,
            "intermediate_size": 4096,
            "num_heads": 16,
            "out_hidden_size": 2048,
            "deepstack_visual_indexes": [5, 11, 17],
            "num_position_embeddings": 2304,
            "patch_size": 16,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
        },
        "tie_word_embeddings": True,
        "ids": QWEN_IDS,
    },
    "8b": {
        "source": "Qwen/Qwen3-VL-8B-Instruct config.json",
        "text": {
            "vocab_size": 151936,
            "hidden_size": 4096,
            "intermediate_size": 12288,
            "num_hidden_layers": 36,
            "num_attention_heads": 32,
            "num_key_value_heads": 8,
            "head_dim": 128,
            "max_position_embeddings": 262144,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 5000000.0,
                "mrope_section": [24, 20, 20],
                "mrope_interleaved": True,
            },
        },
        "vision": {
            "depth": 27,
            "hidden_size": 1152,
            "intermediate_size": 4304,
            "num_heads": 16,
            "out_hidden_size": 4096,
            "deepstack_visual_indexes": [8, 16, 24],
            "num_position_embeddings": 2304,
            "patch_size": 16,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
        },
        "tie_word_embeddings": False,
        "ids": QWEN_IDS,
    },
    # Same architecture, tiny shapes: the CPU smoke test runs the same code path in seconds.
    "tiny": {
        "source": "tiny shapes of the same architecture (worker/tiny_model.py's)",
        "text": {**TEXT_SHAPES, "vocab_size": 512},
        "vision": VISION_SHAPES,
        "tie_word_embeddings": False,
        "ids": {
            "vision_start_token_id": 500,
            "vision_end_token_id": 501,
            "image_token_id": 502,
            "video_token_id": 503,
        },
    },
}

# LoRA targets, matched against the full module path: language model only, never the vision
# tower (whose MLP is also named *_proj).
LORA_TARGETS = {
    "qv": r"^(?:.*\.)?language_model\.(?:.*\.)?(?:q_proj|v_proj)$",
    "all-linear": (
        r"^(?:.*\.)?language_model\.(?:.*\.)?"
        r"(?:q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)$"
    ),
}
