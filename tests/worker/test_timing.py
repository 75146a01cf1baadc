"""The worker's phase clock: each second goes to exactly one component."""

from __future__ import annotations

import pytest

from worker.timing import PhaseClock, device_and_peak_memory, lora_targets_label


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def test_nested_measurement_pauses_the_outer_component() -> None:
    time = FakeTime()
    clock = PhaseClock(now=time)
    with clock.measure("train"):
        time.advance(3)
        with clock.measure("checkpoint_upload"):
            time.advance(2)
        time.advance(4)
    time.advance(10)  # outside every measurement: the job store calls it other_s
    with clock.measure("train"):
        time.advance(1)
    timing = clock.timing()
    assert timing.train_s == 8
    assert timing.checkpoint_upload_s == 2
    assert timing.named_seconds() == 10


def test_switch_hands_the_rest_of_a_measurement_to_another_component() -> None:
    time = FakeTime()
    clock = PhaseClock(now=time)
    with clock.measure("startup"):
        time.advance(5)  # the model load inside train_epochs
        clock.switch("train")
        time.advance(7)
        with clock.measure("checkpoint_upload"):
            time.advance(1)
        time.advance(2)
    assert (
        clock.seconds["startup"],
        clock.seconds["train"],
        clock.seconds["checkpoint_upload"],
    ) == (5, 9, 1)


def test_a_measurement_that_raises_still_counts() -> None:
    time = FakeTime()
    clock = PhaseClock(now=time)
    with pytest.raises(RuntimeError), clock.measure("input_download"):
        time.advance(2)
        raise RuntimeError("connection reset")
    assert clock.timing().input_download_s == 2


def test_unknown_components_and_a_switch_outside_a_measurement_are_refused() -> None:
    clock = PhaseClock()
    with (
        pytest.raises(ValueError, match="unknown timing component 'training'"),
        clock.measure("training"),
    ):
        pass
    with pytest.raises(RuntimeError):
        clock.switch("train")


def test_counts_add_up_and_notes_keep_earlier_facts() -> None:
    clock = PhaseClock()
    clock.note(model_key="tiny-qwen3-vl", micro_batch=2)
    clock.count(samples=4, tokens=100, checkpoints=1)
    clock.count(samples=4, tokens=90, validation_samples=1, input_bytes=512)
    clock.note(precision="fp32", micro_batch=1)  # after an out-of-memory halving
    timing = clock.timing()
    assert (
        timing.samples,
        timing.tokens,
        timing.validation_samples,
        timing.checkpoints,
        timing.input_bytes,
    ) == (8, 190, 1, 1, 512)
    assert (timing.model_key, timing.micro_batch, timing.precision) == ("tiny-qwen3-vl", 1, "fp32")
    assert timing.device and timing.peak_memory_bytes


def test_peak_memory_on_cpu_is_the_process_resident_peak() -> None:
    device, peak = device_and_peak_memory()
    if device == "cpu":
        assert peak > 10 * 2**20  # a Python process with pytest loaded holds more than 10 MiB


def test_lora_targets_label_is_stable_whatever_the_order() -> None:
    assert lora_targets_label(["v_proj", "q_proj"]) == "q_proj,v_proj"
    assert lora_targets_label("all-linear") == "all-linear"
