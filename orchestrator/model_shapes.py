"""Which base model a job trains, as a key that profiles and estimates are filed under.

A job names its base model by a path or a hub id; costs depend on the model's shape, not on
where its files lie. Known shapes get their catalog key; anything else is filed under its own
name, so profiles learned from its runs still apply to the next job that names it.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

TINY = "tiny-qwen3-vl"

# (pattern on the model's name, shape key); first match wins.
_NAMED_SHAPES = (
    (re.compile(r"tiny-qwen3-vl", re.IGNORECASE), TINY),
    (re.compile(r"qwen3-vl-8b", re.IGNORECASE), "qwen3-vl-8b"),
    (re.compile(r"qwen3-vl-2b", re.IGNORECASE), "qwen3-vl-2b"),
)


def model_key_for(base_model: str) -> str:
    name = PurePosixPath(base_model.rstrip("/")).name or base_model
    for pattern, key in _NAMED_SHAPES:
        if pattern.search(name):
            return key
    return name.lower()[:128]
