"""Of two replicas starting the same background round, one runs it and the other skips it."""

from __future__ import annotations

from orchestrator.db import session_scope
from orchestrator.leader import Round, take_round


def test_a_round_is_taken_by_one_transaction_at_a_time(clean_db: None) -> None:
    with session_scope() as first:
        assert take_round(first, Round.REAPER)
        with session_scope() as second:
            assert not take_round(second, Round.REAPER)
            assert take_round(second, Round.SWEEP)  # another round is free
    with session_scope() as later:  # the commit released it
        assert take_round(later, Round.REAPER)


def test_a_round_whose_transaction_failed_is_free_again(clean_db: None) -> None:
    try:
        with session_scope() as dying:
            assert take_round(dying, Round.REAPER)
            raise RuntimeError("the replica died mid-round")
    except RuntimeError:
        pass
    with session_scope() as session:
        assert take_round(session, Round.REAPER)
