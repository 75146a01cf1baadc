"""The README's OpenAI client snippet, run as written against the app: only the client's
address and the training file are pointed at this test's, and workers' reports are played in
before the job is read back."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.api.openai_helpers import chat_jsonl, openai_client
from tests.api.test_openai_fine_tuning import run_relay

README = Path(__file__).parents[2] / "README.md"


def readme_snippet() -> str:
    section = README.read_text(encoding="utf-8").split("### Use the OpenAI client", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_the_readme_snippet_runs(
    client: TestClient, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "train.jsonl").write_bytes(chat_jsonl(3))
    snippet, count = re.subn(
        r"^client = OpenAI\(.*$", "client = test_client", readme_snippet(), flags=re.M
    )
    assert count == 1
    snippet = snippet.replace('open("train.jsonl"', f"open({str(tmp_path / 'train.jsonl')!r}")
    submit, read = snippet.split("job = client.fine_tuning.jobs.retrieve", 1)
    namespace: dict[str, Any] = {"test_client": openai_client(client)}
    exec(compile(submit, "README.md", "exec"), namespace)  # our own README, run as written
    run_relay(namespace["job"].id)
    read = "job = client.fine_tuning.jobs.retrieve" + read
    exec(compile(read, "README.md", "exec"), namespace)
    job = namespace["job"]
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"succeeded ft:tiny-qwen3-vl:boards:{job.id}"
    assert lines[1] == "info Job succeeded"
    assert lines[-1].startswith("2 ")  # the warmup's checkpoint, after the final one
