"""The GPU LoRA throughput bench that scripts/bench_gpu.py runs (see bench/README.md).

    shapes.py   published Qwen3-VL config shapes (2B, 8B) and the tiny preset; LoRA targets
    model.py    the random-weight model, its LoRA adapter, gradient checkpointing
    batches.py  synthetic batches laid out as Qwen3VLProcessor lays them out
    flops.py    parameter counts, the FLOP model of one step, vendor peak rates
    timing.py   the measured training loop, the matmul probe
    report.py   environment, results file, summary line and Markdown table

Not installed with relaytune: the script puts the repository root on sys.path, so it runs from
a bare, uninstalled checkout.
"""
