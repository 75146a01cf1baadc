"""The training recipe: plain functions over local directories (no SQL, Celery or object storage).

- `preprocess.build_artifact`: dataset dir -> tokenized artifact dir
- `train.train_epochs`: artifact + optional checkpoint -> checkpoint dirs
- `evaluate.evaluate_and_export`: checkpoint -> PEFT adapter + evaluation.json

This package imports no torch at import time; each module imports it where it is needed.
"""

from __future__ import annotations

ARTIFACT_FORMAT = "relaytune.tokenized.v1"
CHECKPOINT_FORMAT = "relaytune.checkpoint.v1"
