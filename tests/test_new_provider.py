"""Adding an OpenAI-compatible provider is one TOML file and no Python: the whole promise, end to end.

The test writes a provider the engine has never seen into a copy of the shipped specs, checks it with
`engine check`, starts `engine serve` on it, and streams a tool-calling request through it to the
loopback fake. Nothing in engine/ knows the name `acme`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import WEATHER_TOOL
from tests.servers import ENGINE, REPO, run_gateway

pytestmark = pytest.mark.e2e

ACME_KEY = "acme-test-key-0123456789"

# Written the way a newcomer would from a vendor's docs page (docs/providers.md walks through it).
ACME = """\
#:schema ../schema/provider.schema.json
[provider]
id = "acme"
name = "Acme Inference"
wire = "openai_chat"
base_url = "https://api.acme.invalid/v1"
base_url_env = "ACME_BASE_URL"

[auth]
env = "ACME_API_KEY"
header = "Authorization"
scheme = "Bearer"

[[mappings]]
why = "Acme answers 400 to logit_bias."
drop = ["logit_bias"]

[models."acme/coder-1"]
upstream = "acme-coder-1-2026-11"
name = "Acme Coder 1"
tools = true
context = 131072
max_output = 16384
modalities = { input = ["text"], output = ["text"] }
price = { input = 0.2, output = 0.8 }
"""


def test_engine_check_accepts_the_new_spec_and_names_its_mistakes(tmp_path: Path) -> None:
    specs = tmp_path / "specs"
    shutil.copytree(REPO / "specs", specs)
    (specs / "providers" / "acme.toml").write_text(ACME)
    ok = subprocess.run([ENGINE, "check", "--specs", str(specs)], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stdout + ok.stderr

    (specs / "providers" / "acme.toml").write_text(ACME.replace('wire = "openai_chat"', 'wire = "acme_wire"'))
    bad = subprocess.run([ENGINE, "check", "--specs", str(specs)], capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0
    assert "acme.toml" in bad.stdout + bad.stderr


def test_a_streamed_tool_call_goes_through_a_provider_that_is_only_toml(
    fake: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    fake.reset()
    env = {"ACME_API_KEY": ACME_KEY, "ACME_BASE_URL": fake.url}
    with run_gateway(tmp_path_factory.mktemp("acme"), env, extra_providers={"acme.toml": ACME}) as gateway:
        listed = httpx.get(f"{gateway.url}/models", headers={"Authorization": f"Bearer {gateway.key}"}, timeout=20)
        assert "acme/coder-1" in {m["id"] for m in listed.json()["data"]}

        body = {
            "model": "acme/coder-1",
            "messages": [{"role": "user", "content": "Weather in Oslo?"}],
            "tools": [WEATHER_TOOL],
            "logit_bias": {"1": 1},
            "stream": True,
        }
        headers = {"Authorization": f"Bearer {gateway.key}"}
        with httpx.stream("POST", f"{gateway.url}/chat/completions", json=body, headers=headers, timeout=20) as answer:
            assert answer.status_code == 200
            assert answer.headers["x-compose-upstream-provider"] == "acme"
            assert answer.headers["x-compose-upstream-model"] == "acme-coder-1-2026-11"
            lines = [line for line in answer.iter_lines() if line.startswith("data: ")]

    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[len("data: ") :]) for line in lines[:-1]]
    calls = [tc for c in chunks if c.get("choices") for tc in c["choices"][0]["delta"].get("tool_calls") or []]
    assert calls[0]["id"] and calls[0]["function"]["name"] == "get_weather"
    assert "".join(c["function"].get("arguments") or "" for c in calls) == '{"city":"Oslo"}'
    assert not any("usage" in c and c["usage"] for c in chunks)  # the client did not ask for usage

    sent = fake.requests()[-1]
    headers_sent = {k.lower(): v for k, v in sent["headers"].items()}
    assert headers_sent["authorization"] == f"Bearer {ACME_KEY}"
    assert sent["body"]["model"] == "acme-coder-1-2026-11"
    assert "logit_bias" not in sent["body"]  # the spec's mapping, and nothing else, changed the request
    assert sent["body"]["stream_options"] == {"include_usage": True}  # forced upstream for metering
