"""The wire models themselves: what every response promises whatever the store gives back."""

from __future__ import annotations

import inspect
import typing
from datetime import datetime, timedelta, timezone

import pytest
from pydantic import BaseModel, TypeAdapter

from services.api import budget_schemas, estimate_schemas, schemas


def _datetime_fields() -> list[tuple[str, typing.Any]]:
    found = []
    for module in (schemas, estimate_schemas, budget_schemas):
        for name, model in inspect.getmembers(module, inspect.isclass):
            if not issubclass(model, BaseModel) or model.__module__ != module.__name__:
                continue
            for field, info in model.model_fields.items():
                if "datetime" in repr(info.annotation):
                    found.append((f"{name}.{field}", info.annotation, info.metadata))
    return [
        (where, typing.Annotated[annotation, *metadata]) if metadata else (where, annotation)
        for where, annotation, metadata in found
    ]


DATETIME_FIELDS = _datetime_fields()


def test_there_are_timestamps_to_check() -> None:
    assert {"JobOut.created_at", "EventOut.created_at", "PhaseOut.started_at"} <= {
        where for where, _ in DATETIME_FIELDS
    }


@pytest.mark.parametrize(
    ("where", "annotation"), DATETIME_FIELDS, ids=[where for where, _ in DATETIME_FIELDS]
)
def test_every_timestamp_on_the_wire_is_utc(where: str, annotation: typing.Any) -> None:
    adapter = TypeAdapter(annotation)
    # SQLite gives stored UTC times back without a zone; they must still leave marked as UTC.
    naive = adapter.dump_json(adapter.validate_python(datetime(2026, 11, 28, 7, 50, 3)))
    assert naive == b'"2026-11-28T07:50:03Z"'
    # An aware time in another zone is the same instant, given in UTC.
    shanghai = datetime(2026, 11, 28, 15, 50, 3, tzinfo=timezone(timedelta(hours=8)))
    assert adapter.dump_json(adapter.validate_python(shanghai)) == b'"2026-11-28T07:50:03Z"'
