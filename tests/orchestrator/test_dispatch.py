"""A phase message's wire format is its own: what is sent comes back as the same message."""

from __future__ import annotations

import json

import pytest

from orchestrator.dispatch import PhaseMessage


def test_a_message_survives_its_json_payload() -> None:
    message = PhaseMessage(job_id="j1", phase="warmup", attempt=2, pool="a10", queue="gpu.big")
    payload = json.loads(json.dumps(message.to_payload()))
    assert PhaseMessage.from_payload(payload) == message
    assert PhaseMessage.from_payload(payload).task_id == "relaytune-j1-warmup-a2"


def test_a_message_from_before_queues_routes_to_the_pool_queue() -> None:
    message = PhaseMessage.from_payload(
        {"job_id": "j1", "phase": "final", "attempt": 1, "pool": "a100"}
    )
    assert message.route == "gpu.a100"


@pytest.mark.parametrize(
    "payload",
    [{}, {"job_id": "j1"}, {"job_id": "j", "phase": "final", "attempt": "x", "pool": "a100"}],
)
def test_anything_else_is_not_a_phase_message(payload: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="not a phase message"):
        PhaseMessage.from_payload(payload)
