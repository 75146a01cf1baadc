"""A diverged step fails the phase as non_finite_loss; no NaN ever reaches the adapter."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from orchestrator.errors import RelaytuneError
from tests.worker.recipe_helpers import HP, Recorder, train
from worker.recipe import train as train_module
from worker.recipe.train import NonFiniteLoss
from worker.runner import _error_code


def _adapter_weights_finite(model: Any) -> bool:
    import torch

    return all(bool(torch.isfinite(p).all()) for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("poisoned", ["loss", "gradient"])
def test_a_non_finite_step_stops_training_before_any_update(
    train_artifact_dir: Path,
    tiny_model_dir: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    poisoned: str,
) -> None:
    import torch

    real_stats = train_module.token_stats
    calls = {"n": 0}
    models: list[Any] = []

    def diverging_stats(logits: Any, labels: Any) -> Any:
        # The first window (two micro-batches) trains normally; then the step goes bad.
        calls["n"] += 1
        loss_sum, *rest = real_stats(logits, labels)
        if calls["n"] > 2 and poisoned == "loss":
            loss_sum = loss_sum * float("nan")
        elif calls["n"] > 2:  # a finite loss whose gradient is infinite
            logits.register_hook(lambda grad: grad * float("inf"))
        return (loss_sum, *rest)

    real_step = train_module.Trainer.optimizer_step

    def remember_model(self: Any, window: list[int]) -> Any:
        models.append(self.model)
        return real_step(self, window)

    monkeypatch.setattr(train_module, "token_stats", diverging_stats)
    monkeypatch.setattr(train_module.Trainer, "optimizer_step", remember_model)
    recorder = Recorder()
    with pytest.raises(NonFiniteLoss) as raised:
        train(
            train_artifact_dir, tiny_model_dir, tmp_path, 0, HP["total_epochs"], recorder=recorder
        )
    assert isinstance(raised.value, RelaytuneError)
    assert _error_code(raised.value) == "non_finite_loss"
    assert "Lower learning_rate or lora_alpha" in raised.value.message
    assert [step for step, *_ in recorder.progress] == [1]  # only the good step reported
    assert not any(kind == "final" for *_, kind in recorder.checkpoints)
    with torch.no_grad():
        assert _adapter_weights_finite(models[-1])
