"""The official `openai` package pointed at the app under test, and OpenAI chat .jsonl files."""

from __future__ import annotations

import base64
import json
from typing import Any

import openai
from fastapi.testclient import TestClient

from tests.factories import png_bytes


def openai_client(client: TestClient) -> openai.OpenAI:
    """Only base_url and api_key differ from talking to OpenAI; the HTTP client is the app's."""
    key = client.headers["Authorization"].removeprefix("Bearer ")
    return openai.OpenAI(
        base_url=f"{client.base_url}/v1", api_key=key, http_client=client, max_retries=0
    )


def data_url(image: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(image).decode()


def chat_row(image_url: str, answer: str = "capacitor 3") -> dict[str, Any]:
    return {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Which part is abnormal?"},
                    {"type": "image_url", "image_url": {"url": image_url}},
                ],
            },
            {"role": "assistant", "content": answer},
        ]
    }


def chat_jsonl(rows: int = 3) -> bytes:
    """OpenAI's vision fine-tuning format, images embedded as base64 PNG data URLs."""
    lines = [chat_row(data_url(png_bytes((20 * i, 120, 40))), f"part {i}") for i in range(rows)]
    return "\n".join(json.dumps(line) for line in lines).encode()
