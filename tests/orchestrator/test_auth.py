"""API keys in the store: lifetimes, finding a key by what an operator can see of it, and
revocation."""

from __future__ import annotations

from datetime import timedelta

import pytest

from orchestrator import auth
from orchestrator.db import session_scope
from orchestrator.errors import Conflict, InvalidRequest, NotFound, Unauthorized
from orchestrator.models import utcnow


@pytest.mark.parametrize(
    ("text", "lifetime"),
    [
        ("30d", timedelta(days=30)),
        ("12h", timedelta(hours=12)),
        (" 90m ", timedelta(minutes=90)),
        ("2w", timedelta(weeks=2)),
        ("3600s", timedelta(hours=1)),
        ("3650d", timedelta(days=3650)),
    ],
)
def test_lifetimes_are_a_number_and_a_unit(text: str, lifetime: timedelta) -> None:
    assert auth.parse_duration(text) == lifetime


@pytest.mark.parametrize("text", ["", "30", "d", "1.5d", "-1d", "0s", "3651d", "30 days"])
def test_other_lifetimes_are_refused_by_name(text: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        auth.parse_duration(text, param="--expires-in")
    assert refused.value.param == "--expires-in"


def test_a_key_is_found_by_id_prefix_or_whole_key(clean_db: None) -> None:
    with session_scope() as session:
        row, key = auth.issue_api_key(session, "acme")
        for name in (row.id, row.prefix, f"{row.prefix}…", key):
            assert auth.find_api_key(session, name).id == row.id
        with pytest.raises(NotFound):
            auth.find_api_key(session, "rt_nothing")
        with pytest.raises(NotFound):
            auth.find_api_key(session, "")
        auth.issue_api_key(session, "acme")
        # "rt_" starts every prefix: it names no single key.
        with pytest.raises(Conflict) as ambiguous:
            auth.find_api_key(session, "rt_")
        assert ambiguous.value.code == "ambiguous_api_key" and row.id in ambiguous.value.message


def test_revoked_and_expired_keys_stay_listed_and_say_why_they_fail(clean_db: None) -> None:
    with session_scope() as session:
        revoked, revoked_key = auth.issue_api_key(session, "acme")
        expiring, expiring_key = auth.issue_api_key(session, "acme", expires_in=timedelta(days=1))
        assert auth.authenticate_key(session, expiring_key).id == expiring.id
        first = auth.revoke_api_key(session, revoked).revoked_at
        assert auth.revoke_api_key(session, revoked).revoked_at == first
        assert auth.key_status(expiring, utcnow() + timedelta(days=2)) == "expired"
        expiring.expires_at = utcnow() - timedelta(seconds=1)
        for key, code in ((revoked_key, "api_key_revoked"), (expiring_key, "api_key_expired")):
            with pytest.raises(Unauthorized) as refused:
                auth.authenticate_key(session, key)
            assert refused.value.code == code
        assert [auth.key_status(k) for k in auth.list_api_keys(session, "acme")] == [
            "expired",
            "revoked",
        ]
