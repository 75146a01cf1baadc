"""The final phase's tail: evaluate a checkpoint against the base model and export it.

The held-out (val) samples of the artifact are scored twice, by the bare base and by base +
adapter, with the same computation: val loss and token accuracy teacher-forced on the answer
tokens, and exact match and ROUGE-L of greedy answers generated from the prompt alone.

Output layout (out_dir):
    adapter/          PEFT format (see worker.recipe.export)
    merged/           only with the hyperparameter export_merged
    evaluation.json   the report (schema EVALUATION_SCHEMA), also returned; report["summary"]
                      holds the same figures as flat numbers for an event
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from orchestrator.hyperparameters import Hyperparameters
from orchestrator.layout import ADAPTER_DIR, EVALUATION_FILE, MERGED_DIR
from worker.recipe.checkpoint import read_manifest
from worker.recipe.data import IGNORE_INDEX, TURN_END, collate, to_device
from worker.recipe.export import save_adapter, save_merged
from worker.recipe.lora import load_base
from worker.recipe.metrics import MODEL_INPUTS, answer_scores, evaluate_samples
from worker.recipe.precision import resolve_precision
from worker.recipe.preprocess import load_artifact

logger = logging.getLogger(__name__)

EVALUATION_SCHEMA = "relaytune.evaluation.v1"
METRICS = ("exact_match", "token_accuracy", "rouge_l", "val_loss")


def prompt_and_reference(sample: dict[str, Any]) -> tuple[dict[str, Any], list[int]]:
    """Cut a training sample back to the prompt generation starts from (everything before the
    first answer token); return it with that answer's token ids.

    Only the first answer is the reference: in a multi-turn conversation the later answers
    follow turns the prompt does not contain.
    """
    labels = sample["labels"].tolist()
    start = next(i for i, label in enumerate(labels) if label != IGNORE_INDEX)
    end = next((i for i in range(start, len(labels)) if labels[i] == IGNORE_INDEX), len(labels))
    per_token = ("input_ids", "attention_mask", "labels", "mm_token_type_ids")
    prompt = {k: sample[k][:start] if k in per_token else sample[k] for k in sample}
    return prompt, labels[start:end]


def generate_answer(
    model: Any,
    prompt: dict[str, Any],
    *,
    pad_token_id: int,
    stop_ids: set[int],
    max_new_tokens: int,
    device: Any,
    dtype: Any,
) -> list[int]:
    """Greedy continuation of the prompt, cut before the first stop token."""
    import torch

    batch = to_device(collate([prompt], pad_token_id), device, dtype)
    with torch.no_grad():
        out = model.generate(
            **{k: batch[k] for k in MODEL_INPUTS},
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=sorted(stop_ids),
            pad_token_id=pad_token_id,
        )
    generated: list[int] = out[0, batch["input_ids"].shape[1] :].tolist()
    for i, token in enumerate(generated):
        if token in stop_ids:
            return generated[:i]
    return generated


def _stop_ids(model: Any, tokenizer: Any) -> set[int]:
    # The generation config's eos may name another token than the turn end (<|endoftext|>);
    # either ends the answer.
    ids = {int(tokenizer.convert_tokens_to_ids(TURN_END))}
    eos = getattr(model.generation_config, "eos_token_id", None)
    if eos is not None:
        ids.update(int(e) for e in (eos if isinstance(eos, list) else [eos]))
    return ids


def _best_checkpoint(
    ckpt: dict[str, Any], metric: str, measured: dict[str, float | None]
) -> dict[str, Any]:
    """Which checkpoint is exported and its value of the metric best checkpoints are chosen by.

    The trainer records {"metric", "value", "step"} of the best checkpoint so far under "best"
    in every manifest; that value describes this checkpoint only when its step is this one's.
    Otherwise the checkpoint's own figure (top level or under "metrics") is used, and failing
    that this evaluation's, which is the same computation on the same samples.
    """
    step = ckpt.get("step")
    best = ckpt.get("best")
    best = best if isinstance(best, dict) else {}
    name = str(best.get("metric") or metric)
    recorded = ckpt.get("metrics")
    recorded = recorded if isinstance(recorded, dict) else {}
    if best.get("value") is not None and best.get("step") == step:
        value, source = best["value"], "checkpoint"
    else:
        value, source = recorded.get(name, ckpt.get(name)), "checkpoint"
    if value is None and measured.get(name) is not None:
        value, source = measured[name], "evaluation"
    return {
        "step": step,
        "epoch": ckpt.get("epoch"),
        "kind": ckpt.get("kind"),
        "metric": name,
        "value": value,
        "source": source,
    }


def summarise(report: dict[str, Any]) -> dict[str, float | int | None]:
    """The report's figures as one flat dict of numbers (for a phase_succeeded event)."""
    summary: dict[str, float | int | None] = {"num_samples": report["num_samples"]}
    for side in ("base", "adapter", "delta"):
        for metric in METRICS:
            summary[f"{side}_{metric}"] = report[side][metric]
    best = report["best_checkpoint"]
    summary["best_step"] = best["step"]
    summary[f"best_{best['metric']}"] = best["value"]
    summary["adapter_bytes"] = report["adapter_export"]["bytes"]
    summary["merged_bytes"] = report["merged"]["bytes"] if report["merged"] else None
    return summary


def _score(
    model: Any,
    samples: list[dict[str, Any]],
    val_idx: list[int],
    pad_id: int,
    answers: list[str],
    references: list[str],
    device: Any,
    dtype: Any,
) -> dict[str, float | None]:
    if not val_idx:  # no held-out samples (e.g. a one-image data set): nothing was measured
        return dict.fromkeys(METRICS)
    val_loss, token_accuracy = evaluate_samples(
        model, samples, val_idx, pad_token_id=pad_id, device=device, dtype=dtype
    )
    scores = answer_scores(answers, references)
    return {
        "exact_match": scores["exact_match"],
        "token_accuracy": token_accuracy,
        "rouge_l": scores["rouge_l"],
        "val_loss": val_loss,
    }


def _difference(after: float | None, before: float | None) -> float | None:
    return None if after is None or before is None else after - before


def evaluate_and_export(
    *,
    artifact_dir: Path,
    model_dir: str,
    checkpoint_dir: Path,
    out_dir: Path,
    base_model_name: str | None = None,
    hyperparameters: Hyperparameters | None = None,
    on_export: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Score base and base + checkpoint adapter on the artifact's val samples; export; report.

    hyperparameters default to those the checkpoint was trained with. The model runs in the
    precision training ran in on this device (worker.recipe.precision). base_model_name, if
    given, is recorded in adapter_config.json in place of model_dir (often a download path).
    on_export() runs when scoring is done and the export begins (a caller timing the two).
    Returns the report written to out_dir/evaluation.json.
    """
    from peft import PeftModel
    from transformers import AutoProcessor

    checkpoint_dir, out_dir = Path(checkpoint_dir), Path(out_dir)
    ckpt = read_manifest(checkpoint_dir)
    # A checkpoint records the job's hyperparameters with their defaults filled in.
    hp = (
        hyperparameters
        if hyperparameters is not None
        else Hyperparameters.model_validate(ckpt.get("hyperparameters", {}))
    )
    manifest, samples = load_artifact(Path(artifact_dir))
    val_idx: list[int] = list(manifest["val"])
    pad_id = int(manifest["pad_token_id"])
    tokenizer = AutoProcessor.from_pretrained(model_dir).tokenizer
    precision = resolve_precision(hp.precision)
    device, dtype = precision.device, precision.dtype
    model = PeftModel.from_pretrained(
        load_base(model_dir, device, dtype), str(checkpoint_dir / ADAPTER_DIR)
    )
    model.eval()
    stop_ids = _stop_ids(model, tokenizer)

    def answer(prompt: dict[str, Any]) -> str:
        ids = generate_answer(
            model,
            prompt,
            pad_token_id=pad_id,
            stop_ids=stop_ids,
            max_new_tokens=hp.eval_max_new_tokens,
            device=device,
            dtype=dtype,
        )
        return str(tokenizer.decode(ids, skip_special_tokens=True)).strip()

    # Under the autocast training's validation runs under, so val_loss means the same here.
    with precision.autocast():
        rows = []
        for index in val_idx:
            prompt, reference = prompt_and_reference(samples[index])
            adapter_answer = answer(prompt)
            with model.disable_adapter():
                base_answer = answer(prompt)
            rows.append(
                {
                    "file": manifest["files"][index],
                    "reference": str(tokenizer.decode(reference, skip_special_tokens=True)).strip(),
                    "base_answer": base_answer,
                    "adapter_answer": adapter_answer,
                }
            )
        references = [r["reference"] for r in rows]
        adapter_metrics = _score(
            model,
            samples,
            val_idx,
            pad_id,
            [r["adapter_answer"] for r in rows],
            references,
            device,
            dtype,
        )
        with model.disable_adapter():
            base_metrics = _score(
                model,
                samples,
                val_idx,
                pad_id,
                [r["base_answer"] for r in rows],
                references,
                device,
                dtype,
            )

    if on_export is not None:
        on_export()
    out_dir.mkdir(parents=True, exist_ok=True)
    adapter_export = save_adapter(model, out_dir / ADAPTER_DIR, base_model_name)
    merged = save_merged(model, model_dir, out_dir / MERGED_DIR) if hp.export_merged else None

    report: dict[str, Any] = {
        "schema": EVALUATION_SCHEMA,
        "num_samples": len(val_idx),
        "base": base_metrics,
        "adapter": adapter_metrics,
        "delta": {m: _difference(adapter_metrics[m], base_metrics[m]) for m in METRICS},
        "samples": rows,
        "best_checkpoint": _best_checkpoint(ckpt, hp.best_metric, adapter_metrics),
        "generation": {"greedy": True, "max_new_tokens": hp.eval_max_new_tokens},
        "adapter_export": adapter_export,
        "merged": merged,
    }
    report["summary"] = summarise(report)
    (out_dir / EVALUATION_FILE).write_text(
        json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    logger.info(
        "evaluation on %d samples: adapter %s, base %s", len(val_idx), adapter_metrics, base_metrics
    )
    return report
