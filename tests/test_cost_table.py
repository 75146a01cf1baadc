"""COSTS.md shows what the estimator says: its tables are scripts/cost_table.py's output."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BEGIN, END = "<!-- cost_table.py begin -->", "<!-- cost_table.py end -->"


def test_costs_md_tables_are_the_estimators_output() -> None:
    spec = importlib.util.spec_from_file_location("cost_table", ROOT / "scripts" / "cost_table.py")
    assert spec is not None and spec.loader is not None
    cost_table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cost_table)
    text = (ROOT / "COSTS.md").read_text(encoding="utf-8")
    pasted = text[text.index(BEGIN) + len(BEGIN) : text.index(END)].strip()
    assert pasted == cost_table.all_tables().strip(), (
        "COSTS.md is stale: rerun scripts/cost_table.py and paste its output between the markers"
        " (then check the prose below them)"
    )
