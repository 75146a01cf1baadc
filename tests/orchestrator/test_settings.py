"""Settings that cannot work together are refused at start, naming the variables."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from orchestrator.settings import Settings

LEASE_VARIABLES = ("RELAYTUNE_LEASE_SECONDS", "RELAYTUNE_HEARTBEAT_SECONDS")


@pytest.fixture(autouse=True)
def no_lease_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Only what each test sets counts: no variables or .env file of the machine's."""
    for name in LEASE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


def test_the_default_heartbeat_renews_the_default_lease_four_times_over() -> None:
    settings = Settings()
    assert settings.lease_seconds == 120
    assert settings.heartbeat_seconds == 30


def test_a_short_lease_set_alone_brings_a_heartbeat_well_under_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RELAYTUNE_LEASE_SECONDS", "10")
    settings = Settings()
    assert settings.heartbeat_seconds == 2.5


def test_a_long_lease_does_not_stretch_the_heartbeat_past_thirty_seconds() -> None:
    assert Settings(lease_seconds=3600).heartbeat_seconds == 30


def test_a_heartbeat_set_within_half_the_lease_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELAYTUNE_LEASE_SECONDS", "10")
    monkeypatch.setenv("RELAYTUNE_HEARTBEAT_SECONDS", "5")
    assert Settings().heartbeat_seconds == 5


@pytest.mark.parametrize("heartbeat", ["5.5", "30"])
def test_a_heartbeat_over_half_the_lease_is_refused_naming_both_variables(
    monkeypatch: pytest.MonkeyPatch,
    heartbeat: str,
) -> None:
    monkeypatch.setenv("RELAYTUNE_LEASE_SECONDS", "10")
    monkeypatch.setenv("RELAYTUNE_HEARTBEAT_SECONDS", heartbeat)
    with pytest.raises(ValidationError) as refused:
        Settings()
    message = str(refused.value)
    assert all(name in message for name in LEASE_VARIABLES)
    assert f"({heartbeat})" in message and "(10)" in message


@pytest.mark.parametrize(("field", "value"), [("lease_seconds", 0), ("heartbeat_seconds", -1)])
def test_a_lease_or_heartbeat_below_zero_or_a_lease_of_zero_is_refused(
    field: str,
    value: float,
) -> None:
    with pytest.raises(ValidationError, match=field):
        Settings(**{field: value})
