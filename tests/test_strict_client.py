"""The strictest client we know, end to end: the Vercel AI SDK's openai-compatible provider (OpenCode's
custom-provider client). It rejects a streamed tool call whose first fragment lacks `id` or
`function.name`, and reads usage only from the final chunk. Runs through both wires: gpt-4.1 stays on
chat, gpt-5.5 with tools goes over the Responses wire and is raised back to chat chunks.

Its packages are pinned in tests/clients/vercel_ai_sdk/package-lock.json; `make test` installs them.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

CLIENT = Path(__file__).parent / "clients" / "vercel_ai_sdk"


def run_client(gateway: Any, model: str) -> dict[str, Any]:
    node = shutil.which("node")
    assert node, "node is required for the strict-client test (see the Makefile)"
    assert (CLIENT / "node_modules" / "ai").is_dir(), "run `make test` (npm ci in tests/clients/vercel_ai_sdk)"
    result = subprocess.run(
        [node, str(CLIENT / "client.mjs"), gateway.url, gateway.key, model], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize("model", ["openai/gpt-4.1", "openai/gpt-5.5"])
def test_vercel_ai_sdk_reads_text_tool_calls_and_usage(gateway: Any, upstream: Any, model: str) -> None:
    seen = run_client(gateway, model)
    assert seen["plain"] == {
        "text": "Hello from the fake upstream.",
        "finishReason": "stop",
        "totalTokens": seen["plain"]["totalTokens"],
    }
    assert seen["plain"]["totalTokens"] > 0
    streamed = seen["streamed"]
    assert streamed["errors"] == []
    assert streamed["calls"] == [{"id": "call_fake_1", "name": "get_weather", "input": {"city": "Oslo"}}]
    assert streamed["finishReason"] == "tool-calls"
    assert streamed["totalTokens"] > 0, "usage must reach a client that asked for it"
    tools_wire = {"openai/gpt-4.1": "/v1/chat/completions", "openai/gpt-5.5": "/v1/responses"}[model]
    assert [r["path"] for r in upstream.requests()] == ["/v1/chat/completions", tools_wire]
