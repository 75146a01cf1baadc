"""The deliverer round: POST the webhook deliveries that are due and record what came of them.

The claim is a short transaction under the leader lock (orchestrator.leader); the POSTs run
outside any transaction, a few at once, each bounded by TIMEOUT, so a slow receiver delays
only its own delivery; the outcomes are recorded in a second short transaction.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from functools import partial

import httpx

from orchestrator import webhooks
from orchestrator.db import session_scope
from orchestrator.leader import Round, take_round
from orchestrator.models import utcnow

TIMEOUT = httpx.Timeout(10.0, connect=5.0)
SENDERS = 8


def _post(client: httpx.Client, outgoing: webhooks.Outgoing) -> webhooks.Outcome:
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "relaytune-webhooks",
        "Relaytune-Event-Id": str(outgoing.event_id),
        "Relaytune-Signature": webhooks.signature(outgoing.secret, int(time.time()), outgoing.body),
    }
    try:
        # Streamed and left unread: only the status matters, however large the answer.
        with client.stream("POST", outgoing.url, content=outgoing.body, headers=headers) as answer:
            code = answer.status_code
    except httpx.HTTPError as exc:
        failure = f"{type(exc).__name__}: {exc}"[:500]
        return webhooks.Outcome(outgoing.delivery_id, outgoing.attempt, None, failure)
    refused = None if 200 <= code < 300 else f"the receiver answered HTTP {code}"
    return webhooks.Outcome(outgoing.delivery_id, outgoing.attempt, code, refused)


def deliver_due(clock: Callable[[], datetime] = utcnow) -> int:
    """One round; returns how many attempts it made."""
    with session_scope() as session:
        if not take_round(session, Round.WEBHOOKS):
            return 0
        claimed = webhooks.claim_due(session, clock())
    if not claimed:
        return 0
    # A redirect is not followed: the receiver's URL is the one the tenant registered.
    with (
        httpx.Client(timeout=TIMEOUT, follow_redirects=False) as client,
        ThreadPoolExecutor(SENDERS) as pool,
    ):
        outcomes = list(pool.map(partial(_post, client), claimed))
    with session_scope() as session:
        for outcome in outcomes:
            webhooks.record(session, outcome, clock())
    return len(outcomes)
