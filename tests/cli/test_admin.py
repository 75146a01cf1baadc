"""Operator commands against the job store: admin keys, pools, the worker's queue."""

from __future__ import annotations

from decimal import Decimal

import pytest
from click.testing import CliRunner

from orchestrator.auth import hash_key
from orchestrator.db import session_scope
from orchestrator.models import ApiKey, Pool
from services.cli.main import app, pool_queue


def _invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def test_api_key_create_admin(clean_db: None) -> None:
    code, output = _invoke("api-key", "create", "--tenant", "ops", "--admin")
    assert code == 0, output
    key = output.strip().splitlines()[-1]
    code, plain = _invoke("api-key", "create", "--tenant", "acme")
    with session_scope() as session:
        keys = {k.key_hash: k.is_admin for k in session.query(ApiKey)}
    assert keys == {hash_key(key): True, hash_key(plain.strip().splitlines()[-1]): False}


def test_pools_add_set_and_list(clean_db: None) -> None:
    code, output = _invoke(
        "pools",
        "add",
        "h100",
        "--gpu-model",
        "NVIDIA H100",
        "--memory-gb",
        "80",
        "--price",
        "20",
        "--queue",
        "gpu.h100-spot",
        "--no-bf16",
    )
    assert code == 0, output
    code, output = _invoke("pools", "set", "a100", "--price", "7.5")
    assert code == 0, output
    with session_scope() as session:
        h100, a100 = session.get(Pool, "h100"), session.get(Pool, "a100")
        assert h100 is not None and a100 is not None
        assert (h100.gpu_memory_gb, h100.supports_bf16, h100.currency) == (80, False, "CNY")
        assert a100.hourly_price == Decimal("7.5")
    assert pool_queue("h100") == "gpu.h100-spot"  # what `relaytune worker --pool h100` serves
    assert pool_queue("unknown") == "gpu.unknown"
    code, output = _invoke("pools", "list")
    assert code == 0 and "gpu.h100-spot" in output and "7.5000 CNY" in output


def test_pools_errors_name_the_option_and_change_nothing(clean_db: None) -> None:
    code, output = _invoke("pools", "set", "a100", "--price", "-1")
    assert code == 2 and "--price" in output
    code, output = _invoke("pools", "set", "h100", "--price", "1")
    assert code == 1 and "no pool 'h100'" in output
    code, output = _invoke("pools", "add", "a10", "--price", "1")
    assert code == 1 and "exists" in output
    code, output = _invoke("pools", "add", "h100", "--price", "1")
    assert code == 1 and "gpu_model, gpu_memory_gb must be given" in output
    code, output = _invoke("pools", "set", "a10", "--currency", "USD")
    assert code == 1 and "one currency" in output
    with session_scope() as session:
        assert session.get(Pool, "h100") is None
        a10 = session.get(Pool, "a10")
        assert a10 is not None and a10.currency == "CNY"
        assert session.get(Pool, "a100").hourly_price == Decimal(8)  # type: ignore[union-attr]


def test_tenants_set_and_clear_a_spending_limit(clean_db: None) -> None:
    from orchestrator.models import Tenant

    _invoke("api-key", "create", "--tenant", "acme")
    code, output = _invoke("tenants", "set-limit", "acme", "--amount", "50", "--days", "7")
    assert code == 0, output
    assert "50.000000 CNY" in output and "7 days" in output
    with session_scope() as session:
        tenant = session.query(Tenant).filter_by(name="acme").one()
        assert (tenant.spending_limit, tenant.spending_period_days) == (Decimal(50), 7)
    code, output = _invoke("tenants", "set-limit", "nobody", "--amount", "1")
    assert code == 1 and "tenant 'nobody' not found" in output
    code, output = _invoke("tenants", "set-limit", "acme", "--amount", "5", "--days", "0")
    assert code == 1 and "period_days" in output
    code, output = _invoke("tenants", "clear-limit", "acme")
    assert code == 0 and "none" in output
    with session_scope() as session:
        assert session.query(Tenant).filter_by(name="acme").one().spending_limit is None


def test_api_keys_are_listed_without_the_key_and_revoked_by_prefix(clean_db: None) -> None:
    from orchestrator.auth import authenticate_key
    from orchestrator.errors import Unauthorized

    code, output = _invoke("api-key", "create", "--tenant", "acme", "--expires-in", "30d")
    assert code == 0, output
    key = output.strip().splitlines()[-1]
    _invoke("api-key", "create", "--tenant", "ops", "--admin")
    code, listing = _invoke("api-key", "list")
    assert code == 0, listing
    assert key[:10] in listing and key not in listing and "ops" in listing
    with session_scope() as session:
        row = session.query(ApiKey).filter_by(key_hash=hash_key(key)).one()
        assert row.expires_at is not None and row.id in listing
    code, listing = _invoke("api-key", "list", "--tenant", "ops")
    assert code == 0 and key[:10] not in listing
    code, output = _invoke("api-key", "revoke", key[:10])
    assert code == 0 and "revoked at" in output
    code, output = _invoke("api-key", "revoke", row.id)
    assert code == 0 and "already revoked" in output
    with session_scope() as session, pytest.raises(Unauthorized, match="revoked"):
        authenticate_key(session, key)
    code, listing = _invoke("api-key", "list", "--tenant", "acme")
    assert "revoked" in listing


def test_api_key_mistakes_are_named(clean_db: None) -> None:
    code, output = _invoke("api-key", "create", "--tenant", "acme", "--expires-in", "30x")
    assert code == 2 and "--expires-in" in output
    code, output = _invoke("api-key", "revoke", "rt_nothing")
    assert code == 1 and "no API key has the id or prefix 'rt_nothing'" in output
    code, output = _invoke("api-key", "list", "--tenant", "nobody")
    assert code == 1 and "tenant 'nobody' not found" in output
    with session_scope() as session:
        assert session.query(ApiKey).count() == 0
