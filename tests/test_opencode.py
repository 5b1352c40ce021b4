"""OpenCode itself, end to end: `opencode auth login <gateway>` reads the gateway's well-known document and
runs its auth command, then `opencode run` goes through the gateway (with the stored key, the config the
document carries) to the loopback fake, calls a tool and sends the tool's result in its follow-up turn.

OpenCode is the real CLI from npm (`opencode-ai`, pinned in tests/clients/opencode/package-lock.json;
`make test` installs it). It runs with a HOME and XDG directories of its own, with its update checks,
models.dev fetches, default plugins, LSP downloads and sharing switched off, and behind a proxy address
that answers nothing, so no request can leave the machine. The document endpoints themselves (what they
contain, the base URL as the client sees it) are checked without OpenCode, over HTTP.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.servers import OPENCODE_KEY_ENV

OPENCODE = Path(__file__).parent / "clients" / "opencode" / "node_modules" / ".bin" / "opencode"
QUIET = {
    "OPENCODE_DISABLE_AUTOUPDATE": "1",
    "OPENCODE_DISABLE_MODELS_FETCH": "1",
    "OPENCODE_DISABLE_DEFAULT_PLUGINS": "1",
    "OPENCODE_DISABLE_LSP_DOWNLOAD": "1",
    "OPENCODE_DISABLE_SHARE": "1",
    "OPENCODE_DISABLE_CLAUDE_CODE": "1",
    "OPENCODE_DISABLE_EXTERNAL_SKILLS": "1",
    # Anything that still tried the network would meet a proxy that refuses: only loopback is direct.
    "HTTP_PROXY": "http://127.0.0.1:9",
    "HTTPS_PROXY": "http://127.0.0.1:9",
    "NO_PROXY": "127.0.0.1,localhost",
}


def isolated_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_BASE_URL")) and "PROXY" not in k}
    env |= {
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_DATA_HOME": str(home / ".local" / "share"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "XDG_STATE_HOME": str(home / ".local" / "state"),
        **QUIET,
        **extra,
    }
    return env


def opencode(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    assert OPENCODE.exists(), "run `make test` (npm ci in tests/clients/opencode)"
    return subprocess.run([str(OPENCODE), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=180)


def tool_call_stream(name: str, arguments: dict[str, Any]) -> list[Any]:
    """A streamed Chat Completions answer that calls one tool, as OpenAI sends it (usage chunk, [DONE])."""

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {"id": "chatcmpl-oc", "object": "chat.completion.chunk", "created": 1760000000, "choices": [choice]}

    call = {"index": 0, "id": "call_oc_1", "type": "function", "function": {"name": name, "arguments": ""}}
    text = json.dumps(arguments)
    usage = {"prompt_tokens": 900, "completion_tokens": 20, "total_tokens": 920}
    return [
        chunk({"role": "assistant", "content": None, "tool_calls": [call]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": text[:10]}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": text[10:]}}]}),
        chunk({}, "tool_calls"),
        {"id": "chatcmpl-oc", "object": "chat.completion.chunk", "created": 1760000000, "choices": [], "usage": usage},
        "[DONE]",
    ]


@pytest.mark.skipif(shutil.which("node") is None, reason="OpenCode's npm package needs Node.js to install")
def test_opencode_logs_in_by_the_well_known_document_and_runs_a_tool_turn_through_the_gateway(
    gateway: Any, upstream: Any, tmp_path: Path
) -> None:
    home, project = tmp_path / "home", tmp_path / "project"
    home.mkdir()
    project.mkdir()
    (project / "hello.txt").write_text("The secret word is pelican.\n")

    login = opencode(["auth", "login", gateway.root], isolated_env(home, **{OPENCODE_KEY_ENV: gateway.key}), project)
    assert login.returncode == 0, login.stdout + login.stderr
    stored = json.loads((home / ".local" / "share" / "opencode" / "auth.json").read_text())
    assert stored == {gateway.root: {"type": "wellknown", "key": "COMPOSE_API_KEY", "token": gateway.key}}

    upstream.script({"sse": tool_call_stream("read", {"filePath": str(project / "hello.txt")})})
    run = opencode(
        ["run", "--model", "compose/openai/gpt-4.1", "--format", "json", "--title", "e2e", "--auto", "Read hello.txt"],
        isolated_env(home),  # the key now comes from OpenCode's own store, through the well-known config
        project,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    events = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    tools = [e["part"] for e in events if e["type"] == "tool_use"]
    assert [(t["tool"], t["state"]["status"]) for t in tools] == [("read", "completed")]
    texts = [e["part"]["text"] for e in events if e["type"] == "text"]
    assert texts and "pelican" in texts[-1], "the follow-up turn answered from the tool's result"

    first, follow_up = upstream.requests()
    for sent in (first, follow_up):
        assert sent["path"] == "/v1/chat/completions" and sent["body"]["model"] == "gpt-4.1"
        assert sent["headers"]["Authorization"] != f"Bearer {gateway.key}", "the provider gets its own key"
    assert any(t["function"]["name"] == "read" for t in first["body"]["tools"])
    tool_turn = [m for m in follow_up["body"]["messages"] if m["role"] == "tool"]
    assert [m["tool_call_id"] for m in tool_turn] == ["call_oc_1"] and "pelican" in str(tool_turn[0]["content"])


def test_the_well_known_document_is_what_opencode_reads(gateway: Any) -> None:
    document = httpx.get(f"{gateway.root}/.well-known/opencode").json()  # no key needed
    assert document["auth"]["env"] == "COMPOSE_API_KEY" and isinstance(document["auth"]["command"], list)
    assert document["config"] == httpx.get(f"{gateway.root}/external/opencode").json()
    provider = document["config"]["provider"]["compose"]
    assert set(provider) == {"npm", "name", "env", "options", "models"}
    assert provider["npm"] == "@ai-sdk/openai-compatible"
    assert provider["options"] == {"baseURL": gateway.url, "apiKey": "{env:COMPOSE_API_KEY}"}
    models = provider["models"]
    assert "openai/text-embedding-3-small" not in models, "chat models only"
    assert models["openai/gpt-4.1"] == {
        "name": "GPT-4.1",
        "tool_call": True,
        "reasoning": False,
        "attachment": True,
        "temperature": True,
        "modalities": {"input": ["text", "image"], "output": ["text"]},
        "limit": {"context": 1047576, "output": 32768},
        "release_date": "2025-04-14",
        "cost": {"input": 2.0, "output": 8.0, "cache_read": 0.5},
    }
    assert models["openai/gpt-5.5"]["reasoning"] is True and models["openai/gpt-5.5"]["temperature"] is False


def test_the_base_url_is_the_one_the_client_sees(gateway: Any) -> None:
    behind = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "gw.example.com"}
    config = httpx.get(f"{gateway.root}/external/opencode", headers=behind).json()
    assert config["provider"]["compose"]["options"]["baseURL"] == "https://gw.example.com/external/v1"
    forged = {"X-Forwarded-Proto": "gopher", "X-Forwarded-Host": "evil.example/path?x"}
    config = httpx.get(f"{gateway.root}/external/opencode", headers=forged).json()
    assert config["provider"]["compose"]["options"]["baseURL"] == gateway.url, "malformed forwarding is ignored"
