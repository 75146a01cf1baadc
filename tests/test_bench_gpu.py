"""scripts/bench_gpu.py: the tiny preset on CPU runs the GPU bench's code path in seconds."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path
from types import ModuleType

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

import torch

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_gpu.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_gpu", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_gpu"] = module
    spec.loader.exec_module(module)
    return module


def test_tiny_preset_on_cpu_writes_sane_json(bench: ModuleType, tmp_path: Path) -> None:
    out = tmp_path / "results.json"  # a file path; a folder gets <device>-<date>.json
    argv = [
        "--preset", "tiny", "--device", "cpu", "--dtype", "float32",
        "--micro-batch", "1", "2", "--lora", "qv", "all-linear", "--grad-ckpt", "off", "on",
        "--steps", "2", "--warmup", "1", "--out", str(out),
    ]  # fmt: skip
    returned = bench.main(argv)
    result = json.loads(out.read_text())
    assert result == json.loads(json.dumps(returned))

    env = result["environment"]
    assert env["device_type"] == "cpu"
    assert env["transformers"] and env["peft"] and env["torch"] and env["date"]
    assert result["peak_bf16_tflops"] is None  # no peak on CPU: no MFU claimed
    assert result["configs"]["tiny"]["text_config"]["hidden_size"] == 64

    runs = result["runs"]
    assert len(runs) == 2 * 2 * 2
    assert all("error" not in r for r in runs), [r.get("error") for r in runs]
    for r in runs:
        assert r["seq_len"] == 64 + 196 + 2  # 448x448 image: (448/16)^2/4 merged tokens
        assert r["vision_patches_per_sample"] == 784
        assert r["tokens_per_step"] == r["micro_batch"] * r["seq_len"]
        assert r["step_time_s_median"] > 0
        assert r["step_time_s_min"] <= r["step_time_s_median"] <= r["step_time_s_max"]
        assert math.isclose(r["samples_per_s"], r["micro_batch"] / r["step_time_s_median"])
        assert math.isclose(r["tokens_per_s"], r["samples_per_s"] * r["seq_len"])
        assert r["peak_memory_gib"] is None and r["mfu"] is None
        assert r["achieved_tflops"] > 0
        assert r["losses_finite"]
        p = r["params"]
        assert p["lora"] == p["trainable"] > 0  # only the adapter trains
        assert p["llm"] > 0 and p["vision_patch"] > 0 and p["lm_head"] > 0
        f = r["flops"]
        assert f["model_flops_per_step"] > 0
        if r["gradient_checkpointing"]:
            assert f["hardware_flops_per_step"] > f["model_flops_per_step"]
        else:
            assert f["hardware_flops_per_step"] == f["model_flops_per_step"]
        assert r["counted_flops_per_step"] is None or r["counted_flops_per_step"] > 0

    by = {(r["lora_targets"], r["micro_batch"], r["gradient_checkpointing"]): r for r in runs}
    # all-linear puts LoRA on all 7 projections: more adapter parameters than q,v alone
    assert by[("all-linear", 1, False)]["params"]["lora"] > by[("qv", 1, False)]["params"]["lora"]
    assert "| tiny | qv | off | 2 |" in bench.table(result)


def test_lora_targets_stay_in_the_language_model(bench: ModuleType) -> None:
    model = bench.build_model("tiny", torch.device("cpu"), torch.float32, "sdpa")
    peft_model = bench.apply_lora(model, "all-linear", 0.0)
    names = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert names and all("language_model" in n and "lora_" in n for n in names)
    assert not any(".visual." in n for n in names)


def test_flop_model_is_lora_not_full_finetune(bench: ModuleType) -> None:
    model = bench.build_model("tiny", torch.device("cpu"), torch.float32, "sdpa")
    cfg = model.config
    shape = bench.batch_shape(cfg, micro_batch=4, image_size=448, text_tokens=64)
    params = bench.count_linear_params(model)
    f = bench.flop_model(cfg, params, shape, grad_ckpt=False)
    tokens = 4 * shape.seq_len
    linear = 2.0 * (params["llm"] + params["lm_head"]) * tokens
    # LLM: forward 2*N*T and backward (activation grads only) 2*N*T, plus attention
    assert f["llm_fwd"] > linear / 2 * 0.999
    assert f["llm_bwd"] > linear / 2 * 0.999
    assert f["llm_fwd"] + f["llm_bwd"] < 3 * linear  # nowhere near 6*N*T plus a margin
    ckpt = bench.flop_model(cfg, params, shape, grad_ckpt=True)
    assert ckpt["model_flops_per_step"] == f["model_flops_per_step"]
    assert ckpt["recompute"] > 0


@pytest.mark.parametrize(
    ("preset", "total_b", "llm_hidden", "deepstack"),
    [("2b", 2.13, 2048, [5, 11, 17]), ("8b", 8.77, 4096, [8, 16, 24])],
)
def test_published_shapes_give_published_sizes(
    bench: ModuleType, preset: str, total_b: float, llm_hidden: int, deepstack: list[int]
) -> None:
    model = bench.build_model(preset, torch.device("meta"), torch.bfloat16, "sdpa")
    cfg = model.config
    assert cfg.text_config.hidden_size == llm_hidden
    assert cfg.vision_config.out_hidden_size == llm_hidden
    assert list(cfg.vision_config.deepstack_visual_indexes) == deepstack
    total = bench.count_linear_params(model)["total"] / 1e9
    assert abs(total - total_b) < 0.01, total


def test_peak_by_device_name(bench: ModuleType) -> None:
    assert bench.peak_tflops_for("NVIDIA H100 80GB HBM3") == pytest.approx(989.4)
    assert bench.peak_tflops_for("NVIDIA H200") == pytest.approx(989.4)
    assert bench.peak_tflops_for("NVIDIA H100 PCIe") == pytest.approx(756.0)
    assert bench.peak_tflops_for("Some CPU") is None


def test_results_file_is_named_after_device_and_date(bench: ModuleType) -> None:
    assert bench.results_name("NVIDIA H200", "2026-11-28") == "nvidia-h200-2026-11-28.json"
    name = bench.results_name("NVIDIA H100 80GB HBM3", "2026-11-28")
    assert name == "nvidia-h100-80gb-hbm3-2026-11-28.json"
