"""While the CLI waits on a job: which queued phases no live worker serves."""

from __future__ import annotations

from typing import Any

from orchestrator.lifecycle import PhaseStatus


def unserved_phases(job: dict[str, Any], pools: list[dict[str, Any]] | None) -> dict[str, str]:
    """Phase name -> a warning, for each queued phase that waits on a pool with no live worker.

    The server says so itself (`waiting_for_worker`) once a phase has been queued a while. The
    pools' live workers tell sooner, but only once the reaper has seen some worker at all: before
    its first round every pool shows none, and that says nothing yet.
    """
    live = {p["name"]: p.get("live_workers") for p in pools or []}
    any_seen = any(live.values())
    warnings = {}
    for phase in job["phases"]:
        if phase["status"] != PhaseStatus.QUEUED:
            continue
        pool = phase["pool"]
        if phase.get("status_detail") == "waiting_for_worker" or (any_seen and live.get(pool) == 0):
            warnings[phase["name"]] = (
                f"{phase['name']} is queued on pool {pool}, where no worker has been seen lately; "
                f"it waits until one starts (relaytune worker --pool {pool})"
            )
    return warnings
