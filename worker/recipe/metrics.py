"""Token-level loss and accuracy, shared by the training loop and the evaluation; answer-level
exact match and ROUGE-L for the evaluation."""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from worker.recipe.data import IGNORE_INDEX, Batch, collate, to_device

if TYPE_CHECKING:
    import torch

MODEL_INPUTS = (
    "input_ids",
    "attention_mask",
    "pixel_values",
    "image_grid_thw",
    "mm_token_type_ids",
)


def forward_logits(model: Any, batch: Batch) -> torch.Tensor:
    # mm_token_type_ids must be passed: without it Qwen3-VL cannot place the image tokens in
    # its multimodal rotary positions.
    inputs = {k: batch[k] for k in MODEL_INPUTS}
    logits: torch.Tensor = model(**inputs, use_cache=False).logits
    return logits


def token_stats(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int, int]:
    """(summed next-token loss, number of label tokens, number predicted right)."""
    import torch

    shift_logits = logits[:, :-1].float()
    shift_labels = labels[:, 1:]
    mask = shift_labels != IGNORE_INDEX
    loss_sum = torch.nn.functional.cross_entropy(
        shift_logits.reshape(-1, shift_logits.size(-1)),
        shift_labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )
    correct = ((shift_logits.argmax(-1) == shift_labels) & mask).sum()
    return loss_sum, int(mask.sum()), int(correct)


def label_token_count(batch: Batch) -> int:
    return int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())


def evaluate_samples(
    model: Any,
    samples: list[dict[str, Any]],
    indices: list[int],
    *,
    pad_token_id: int,
    device: torch.device,
    dtype: torch.dtype,
) -> tuple[float, float]:
    """(mean token loss, token accuracy) over the given samples, one sample at a time."""
    import torch

    was_training = model.training
    model.eval()
    loss_total, tokens, correct = 0.0, 0, 0
    with torch.no_grad():
        for index in indices:
            batch = to_device(collate([samples[index]], pad_token_id), device, dtype)
            loss_sum, n, c = token_stats(forward_logits(model, batch), batch["labels"])
            loss_total += float(loss_sum)
            tokens += n
            correct += c
    model.train(was_training)
    return loss_total / max(tokens, 1), correct / max(tokens, 1)


# --- answer-level metrics for the evaluation (pure Python: generated text against references) ---


def normalise_answer(text: str) -> str:
    """Case-folded, NFKC, punctuation dropped, whitespace collapsed.

    "The bulging capacitor, top right." and "the bulging capacitor top right" are the same
    answer; punctuation is dropped rather than kept because a model that ends its answer with a
    full stop has not answered differently.
    """
    text = unicodedata.normalize("NFKC", text).casefold()
    kept = "".join(" " if unicodedata.category(c).startswith("P") else c for c in text)
    return " ".join(kept.split())


def _is_cjk(char: str) -> bool:
    code = ord(char)
    return (
        0x3040 <= code <= 0x30FF  # kana
        or 0x3400 <= code <= 0x4DBF  # CJK extension A
        or 0x4E00 <= code <= 0x9FFF  # CJK unified ideographs
        or 0xAC00 <= code <= 0xD7AF  # hangul syllables
        or 0xF900 <= code <= 0xFAFF  # CJK compatibility ideographs
    )


def answer_tokens(text: str) -> list[str]:
    """Words of the normalised answer; each CJK character is a word of its own.

    Chinese and Japanese answers (the bundled example's are Chinese) carry no spaces, so
    splitting on whitespace alone would make a whole answer one token and ROUGE-L an exact match.
    """
    tokens: list[str] = []
    for word in normalise_answer(text).split():
        run = ""
        for char in word:
            if _is_cjk(char):
                if run:
                    tokens.append(run)
                    run = ""
                tokens.append(char)
            else:
                run += char
        if run:
            tokens.append(run)
    return tokens


def exact_match(prediction: str, reference: str) -> bool:
    return normalise_answer(prediction) == normalise_answer(reference)


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence; O(len(a) * len(b)) time, O(len(b)) memory."""
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1 (beta = 1) over answer_tokens: 2PR / (P + R) with P = LCS / |prediction|,
    R = LCS / |reference|. Two empty answers agree (1.0); one empty answer scores 0.0."""
    pred, ref = answer_tokens(prediction), answer_tokens(reference)
    if not pred or not ref:
        return float(pred == ref)
    common = lcs_length(pred, ref)
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def answer_scores(predictions: list[str], references: list[str]) -> dict[str, float]:
    """Mean exact match and ROUGE-L of paired answers (0.0 for no pairs)."""
    pairs = list(zip(predictions, references, strict=True))
    n = max(len(pairs), 1)
    return {
        "exact_match": sum(exact_match(p, r) for p, r in pairs) / n,
        "rouge_l": sum(rouge_l(p, r) for p, r in pairs) / n,
    }
