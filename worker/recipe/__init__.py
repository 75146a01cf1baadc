"""The training recipe: plain functions over local directories (no SQL, Celery or object storage).

- `preprocess.build_artifact`: dataset dir -> tokenized artifact dir
- `train.train_epochs`: artifact + optional checkpoint -> checkpoint dirs
- `evaluate.evaluate_and_export`: checkpoint -> PEFT adapter + evaluation.json

This package imports no torch at import time; each module imports it where it is needed.
"""

from __future__ import annotations

# v2 stores each sample's images as the processor's resized 8-bit images (worker.recipe.pixels)
# where v1 stored fp32 patches; both load.
ARTIFACT_FORMAT = "relaytune.tokenized.v2"
ARTIFACT_FORMATS_READ = ("relaytune.tokenized.v1", ARTIFACT_FORMAT)
CHECKPOINT_FORMAT = "relaytune.checkpoint.v1"
