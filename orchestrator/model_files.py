"""Which of a registered model's files a phase reads. Preprocessing loads only the processor
(tokenizer, chat template, image processor) and the configs; only the training phases load
the weights. The worker's model cache fetches, and the estimator charges, just those files."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

# Weight files by suffix; everything else (configs, processor, tokenizer, chat template,
# generation config, the safetensors index) is small and read without the weights.
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
PHASES_WITHOUT_WEIGHTS = frozenset({"preprocess"})


def is_weights(path: str) -> bool:
    return path.lower().endswith(WEIGHT_SUFFIXES)


def needs_weights(phase: str) -> bool:
    return phase not in PHASES_WITHOUT_WEIGHTS


def files_read(files: Iterable[dict[str, Any]], *, weights: bool) -> list[dict[str, Any]]:
    """The recorded files ({"path", "sha256", "bytes"}) a phase reads: all of them, or all but
    the weights."""
    return [f for f in files if weights or not is_weights(str(f["path"]))]


def bytes_read(files: Iterable[dict[str, Any]], *, weights: bool) -> int:
    return sum(int(f["bytes"]) for f in files_read(files, weights=weights))
