"""Rows of a `.json` (one list) or `.jsonl` (one object a line) data file, each with its name."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from orchestrator.dataformats.common import Problems, load_json
from orchestrator.dataformats.sources import FileSource


@dataclass(frozen=True)
class Row:
    id: str  # "data.jsonl:3" (1-based line) or "data.json[2]" (0-based index)
    line: int | None
    value: Any
    error: str | None = None  # why the line is not JSON; reported in row order by the parser


def _decode(raw: bytes, file: str, problems: Problems) -> str | None:
    try:
        return raw.decode("utf-8-sig")  # editors on Windows write a byte-order mark
    except UnicodeDecodeError as exc:
        problems.add(file, "invalid_json", f"{file} is not UTF-8: {exc}")
        return None


def read_rows(source: FileSource, member: str, file: str, problems: Problems) -> list[Row]:
    """Parse every row; a line that is not JSON is a problem naming its line, not a skip."""
    known = len(problems.items)
    text = _decode(source.read(member), file, problems)
    if text is None:
        return []
    rows: list[Row] = []
    if file.endswith(".jsonl"):
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            row_id = f"{file}:{number}"
            try:
                rows.append(Row(row_id, number, load_json(line)))
            except json.JSONDecodeError as exc:
                rows.append(
                    Row(
                        row_id,
                        number,
                        None,
                        f"{file} line {number} is not valid JSON: {exc.msg} (column {exc.colno})",
                    )
                )
    else:
        try:
            data = load_json(text)
        except json.JSONDecodeError as exc:
            problems.add(file, "invalid_json", f"{file} is not valid JSON: {exc}", line=exc.lineno)
            return []
        if not isinstance(data, list):
            problems.add(file, "invalid_dataset", f"{file} must hold a JSON list of rows")
            return []
        rows = [Row(f"{file}[{index}]", None, value) for index, value in enumerate(data)]
    if not rows and len(problems.items) == known:
        problems.add(file, "invalid_dataset", f"{file} holds no rows")
    return rows


def row_messages(row: Row, problems: Problems) -> list[Any] | None:
    """The row's `messages` list, or None after recording why there is none."""
    if row.error is not None:
        problems.add(row.id, "invalid_json", row.error, line=row.line)
        return None
    value = row.value
    messages = value.get("messages") if isinstance(value, dict) else None
    if not isinstance(messages, list) or not messages:
        problems.add(
            row.id,
            "invalid_row",
            f'{row.id}: a row must be an object with a non-empty "messages" list',
            line=row.line,
        )
        return None
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in (
            "system",
            "user",
            "assistant",
        ):
            problems.add(
                row.id,
                "invalid_row",
                f"{row.id}: message {index} needs a role of system, user or assistant",
                line=row.line,
            )
            return None
    return messages
