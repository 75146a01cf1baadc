"""The wire format of the data set list."""

from __future__ import annotations

from pydantic import BaseModel

from services.api.schemas import DatasetOut


class DatasetList(BaseModel):
    data: list[DatasetOut]
    total: int
    limit: int
    offset: int
