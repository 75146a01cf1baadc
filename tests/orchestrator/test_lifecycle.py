from __future__ import annotations

import pytest

from orchestrator.lifecycle import PHASE_TRANSITIONS, JobStatus, PhaseStatus, derive_job_status

S, Q, R, OK, F, C = "pending", "queued", "running", "succeeded", "failed", "cancelled"


@pytest.mark.parametrize(
    ("phases", "cancel", "expected"),
    [
        ((Q, S, S), False, JobStatus.QUEUED),
        ((R, S, S), False, JobStatus.RUNNING),
        ((OK, Q, S), False, JobStatus.RUNNING),
        ((OK, OK, OK), False, JobStatus.SUCCEEDED),
        ((OK, F, S), False, JobStatus.FAILED),
        ((R, C, C), True, JobStatus.CANCELLING),
        ((C, C, C), True, JobStatus.CANCELLED),
        ((OK, C, C), True, JobStatus.CANCELLED),
    ],
)
def test_job_status_is_derived_from_phases(
    phases: tuple[str, ...], cancel: bool, expected: JobStatus
) -> None:
    assert derive_job_status(phases, cancel_requested=cancel) is expected


def test_no_phase_leaves_a_terminal_state_except_by_requeue() -> None:
    for (current, target), _why in PHASE_TRANSITIONS.items():
        if current in (PhaseStatus.SUCCEEDED, PhaseStatus.FAILED, PhaseStatus.CANCELLED):
            assert target in (PhaseStatus.QUEUED, PhaseStatus.PENDING)
    assert (PhaseStatus.PENDING, PhaseStatus.RUNNING) not in PHASE_TRANSITIONS
