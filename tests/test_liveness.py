"""Local servers (Ollama, vLLM, LM Studio) need no key: they are live while they answer their probe.

In process, over httpx.MockTransport: the gateway's one upstream client carries the probes, so the test
decides which local server "answers", and `/models` routing follows."""

from __future__ import annotations

import asyncio
import subprocess

import httpx

from engine.catalog import Catalog
from engine.liveness import Prober, probe_all
from engine.spec.loader import load_specs
from tests.conftest import SPECS
from tests.servers import ENGINE

SHIPPED = load_specs(SPECS)


def test_local_servers_are_live_when_they_answer_not_when_a_key_is_set() -> None:
    catalog = Catalog.from_specs(SHIPPED, env={"OLLAMA_API_KEY": "set-but-irrelevant"})
    answering = {"127.0.0.1:11434"}  # Ollama is up; vLLM and LM Studio are not
    seen: list[str] = []

    def upstream(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.method} {request.url}")
        if request.url.netloc.decode() in answering:
            return httpx.Response(200, json={"object": "list", "data": []})
        raise httpx.ConnectError("refused", request=request)

    async def scenario() -> None:
        async with httpx.AsyncClient(transport=httpx.MockTransport(upstream)) as client:
            assert "ollama/gpt-oss-20b" not in catalog.live_models()  # not probed yet
            await probe_all(client, catalog)
            assert "ollama/gpt-oss-20b" in catalog.live_models()
            assert "vllm/gpt-oss-20b" not in catalog.live_models()
            assert "lmstudio/gpt-oss-20b" not in catalog.live_models()
            answering.clear()  # Ollama stops
            await probe_all(client, catalog)
            assert "ollama/gpt-oss-20b" not in catalog.live_models()

    asyncio.run(scenario())
    assert "GET http://127.0.0.1:11434/v1/models" in seen
    assert "GET http://127.0.0.1:8000/v1/models" in seen


def test_an_error_status_or_a_slow_answer_is_not_live() -> None:
    catalog = Catalog.from_specs(SHIPPED, env={})

    async def upstream(request: httpx.Request) -> httpx.Response:
        if request.url.port == 1234:
            await asyncio.sleep(30)  # LM Studio hangs: the probe's own timeout (2 s in the spec) decides
        return httpx.Response(503 if request.url.port == 11434 else 200)

    async def scenario() -> None:
        async with httpx.AsyncClient(transport=httpx.MockTransport(upstream)) as client:
            await probe_all(client, catalog)

    asyncio.run(scenario())
    live = {p.id for p in catalog.live_providers()}
    assert live == {"vllm"}


def test_the_prober_keeps_probing_and_stops_cleanly() -> None:
    catalog = Catalog.from_specs(SHIPPED, env={})
    probes = 0
    second = asyncio.Event()

    def upstream(request: httpx.Request) -> httpx.Response:
        nonlocal probes
        if request.url.port == 11434:
            probes += 1
            if probes == 2:
                second.set()
        return httpx.Response(200)

    async def scenario() -> None:
        async with httpx.AsyncClient(transport=httpx.MockTransport(upstream)) as client:
            prober = Prober(client, catalog, interval=0.01)
            await prober.start()
            assert "ollama/gpt-oss-20b" in catalog.live_models()  # the first round ran before start() returned
            await asyncio.wait_for(second.wait(), timeout=10)
            await prober.stop()

    asyncio.run(scenario())


def test_a_present_key_is_sent_to_a_local_server_and_an_absent_one_is_not() -> None:
    with_key = Catalog.from_specs(SHIPPED, env={"VLLM_API_KEY": "token-abc"}).providers["vllm"]
    without = Catalog.from_specs(SHIPPED, env={}).providers["vllm"]
    assert with_key.auth_headers() == {"Authorization": "Bearer token-abc"}
    assert without.auth_headers() == {}


def test_engine_providers_lists_env_variables_and_state() -> None:
    env = {"PATH": "/usr/bin:/bin", "GROQ_API_KEY": "gsk-test-0000", "OLLAMA_BASE_URL": "http://127.0.0.1:9/v1"}
    result = subprocess.run([ENGINE, "providers"], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = {line.split()[0]: line for line in result.stdout.splitlines()[1:]}
    assert set(lines) == {f.spec.provider.id for f in SHIPPED.providers}
    assert "GROQ_API_KEY, GROQ_BASE_URL" in lines["groq"] and lines["groq"].rstrip().endswith("live")
    assert "no key ($TOGETHER_API_KEY unset)" in lines["together"]
    assert "OLLAMA_API_KEY (optional), OLLAMA_BASE_URL" in lines["ollama"]
    assert "local server at http://127.0.0.1:9/v1: not answering, not live" in lines["ollama"]
