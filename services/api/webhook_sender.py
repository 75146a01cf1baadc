"""The deliverer round: POST the webhook deliveries that are due and record what came of them.

The claim is a short transaction under the leader lock (orchestrator.leader); the POSTs run
outside any transaction, a few at once, each bounded by TIMEOUT, so a slow receiver delays
only its own delivery; the outcomes are recorded in a second short transaction.

Each POST goes to an address checked just before it (orchestrator.webhook_addresses): the URL's
host is resolved once, every address it resolves to must be allowed, and the connection is made
to the checked address itself, so a name cannot resolve to a public address for the check and
to an internal one for the connection (DNS rebinding). The request still carries the URL's host
in its Host header and, for https, as the TLS server name, whose certificate must match it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from functools import partial
from typing import Any

import httpx

from orchestrator import webhook_addresses, webhooks
from orchestrator.db import session_scope
from orchestrator.leader import Round, take_round
from orchestrator.models import utcnow

TIMEOUT = httpx.Timeout(10.0, connect=5.0)
SENDERS = 8


def _transport() -> httpx.HTTPTransport:
    """Straight to the checked address: no proxy from HTTP(S)_PROXY (a proxy would connect
    wherever the name resolves for it, and would name the address, not the host, in TLS), and
    no connection kept for another delivery (connections are made to addresses, and a kept one
    would carry a second host's request over the first host's TLS session). SSL_CERT_FILE and
    SSL_CERT_DIR still choose the trusted authorities."""
    return httpx.HTTPTransport(limits=httpx.Limits(max_keepalive_connections=0))


def _pinned(url: httpx.URL) -> tuple[httpx.URL, dict[str, str], dict[str, Any]]:
    """The URL with its host replaced by the checked address, the Host header, and the TLS
    server name; raises webhook_addresses.Undeliverable when the host may not be sent to."""
    host = url.raw_host.decode("ascii")
    port = url.port or (443 if url.scheme == "https" else 80)
    address = webhook_addresses.send_address(host, port)
    if webhook_addresses.literal_address(host) is not None:
        return url, {}, {}  # an address already: nothing resolves it again
    extensions = {"sni_hostname": host} if url.scheme == "https" else {}
    return url.copy_with(host=str(address)), {"Host": url.netloc.decode("ascii")}, extensions


def _post(client: httpx.Client, outgoing: webhooks.Outgoing) -> webhooks.Outcome:
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "relaytune-webhooks",
        "Relaytune-Event-Id": str(outgoing.event_id),
        "Relaytune-Signature": webhooks.signature(outgoing.secret, int(time.time()), outgoing.body),
    }
    try:
        url, host_header, extensions = _pinned(httpx.URL(outgoing.url))
        # Streamed and left unread: only the status matters, however large the answer.
        with client.stream(
            "POST",
            url,
            content=outgoing.body,
            headers={**headers, **host_header},
            extensions=extensions,
        ) as answer:
            code = answer.status_code
    except webhook_addresses.Undeliverable as exc:
        return webhooks.Outcome(outgoing.delivery_id, outgoing.attempt, None, str(exc)[:500])
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
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
    # A redirect is not followed: the receiver's URL is the one the tenant registered (and its
    # address the one checked).
    with (
        httpx.Client(timeout=TIMEOUT, transport=_transport(), follow_redirects=False) as client,
        ThreadPoolExecutor(SENDERS) as pool,
    ):
        outcomes = list(pool.map(partial(_post, client), claimed))
    with session_scope() as session:
        for outcome in outcomes:
            webhooks.record(session, outcome, clock())
    return len(outcomes)
