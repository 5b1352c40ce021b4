"""The usage ledger through the real server: one row per proxied request, for every wire, streamed or
not, cut short or failed over, with the request id the client saw in `x-request-id`; and a SIGTERM
during load loses none of them."""

from __future__ import annotations

import asyncio
import concurrent.futures
import signal
import time
from typing import Any

import httpx
import pytest

from engine.storage import UsageRow, open_database
from tests.conftest import PROVIDER_KEY, completion, content_chunk

CHAT = "/external/v1/chat/completions"
RESPONSES = "/external/v1/responses"
HELLO = [{"role": "user", "content": "Say hello."}]


def ledger_rows(env: dict[str, str], request_ids: list[str], timeout: float = 15.0) -> dict[str, UsageRow]:
    """The ledger rows of these requests, once the gateway has written them (it batches)."""

    async def read() -> dict[str, UsageRow]:
        db = open_database(env["ENGINE_DB"])
        await db.open()
        try:
            return {r.request_id: r for r in await db.recent(limit=100_000) if r.request_id in request_ids}
        finally:
            await db.close()

    deadline = time.monotonic() + timeout
    while True:
        found = asyncio.run(read())
        if len(found) == len(set(request_ids)) or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


@pytest.mark.parametrize(
    ("path", "body", "upstream_model", "operation"),
    [
        (CHAT, {"model": "openai/gpt-4.1", "messages": HELLO}, "gpt-4.1", "chat.completions"),
        (CHAT, {"model": "openai/gpt-4.1", "messages": HELLO, "stream": True}, "gpt-4.1", "chat.completions"),
        (RESPONSES, {"model": "openai/gpt-5.5", "input": "Say hello."}, "gpt-5.5", "responses"),
        (RESPONSES, {"model": "openai/gpt-5.5", "input": "Say hello.", "stream": True}, "gpt-5.5", "responses"),
        (RESPONSES, {"model": "openai/gpt-4.1", "input": "Say hello.", "stream": True}, "gpt-4.1", "responses"),
    ],
    ids=["chat", "chat-stream", "responses-wire", "responses-wire-stream", "responses-over-chat-stream"],
)
def test_every_request_leaves_one_priced_row(
    gateway: Any,
    http: httpx.Client,
    upstream: Any,
    path: str,
    body: dict[str, Any],
    upstream_model: str,
    operation: str,
) -> None:
    response = http.post(path, json=body)
    assert response.status_code == 200
    request_id = response.headers["x-request-id"]
    assert request_id.startswith("req_")
    row = ledger_rows(gateway.env, [request_id])[request_id]
    assert (row.public_model, row.provider, row.upstream_model, row.operation) == (
        body["model"],
        "openai",
        upstream_model,
        operation,
    )
    assert (row.status, row.outcome, row.attempts, row.estimated) == (200, "ok", 1, False)
    assert row.prompt_tokens > 0 and row.completion_tokens > 0
    price_in, price_cached, price_out = {"gpt-4.1": (2.00, 0.50, 8.00), "gpt-5.5": (5.00, 0.50, 30.00)}[upstream_model]
    uncached = row.prompt_tokens - row.cached_tokens
    cost = (uncached * price_in + row.cached_tokens * price_cached + row.completion_tokens * price_out) / 1e6
    assert row.cost_usd == pytest.approx(cost)
    assert 0 < row.latency_ms < 20_000
    assert row.key_id == gateway.key.removeprefix("compose-").split("_")[0]


def test_a_retried_request_is_one_row_with_its_attempts_and_an_error_is_a_row_too(
    gateway: Any, http: httpx.Client, upstream: Any
) -> None:
    upstream.script({"status": 503, "json": {"error": {"message": "Overloaded", "type": "server_error"}}})
    served = http.post(CHAT, json={"model": "openai/gpt-5.5", "messages": HELLO})
    upstream.script({"status": 400, "json": {"error": {"message": "Bad value", "type": "invalid_request_error"}}})
    failed = http.post(CHAT, json={"model": "openai/gpt-5.5", "messages": HELLO})
    assert (served.status_code, failed.status_code) == (200, 400)
    rows = ledger_rows(gateway.env, [served.headers["x-request-id"], failed.headers["x-request-id"]])
    ok, error = rows[served.headers["x-request-id"]], rows[failed.headers["x-request-id"]]
    assert ok.attempts == int(served.headers["x-compose-attempts"]) == 2
    assert (ok.provider, ok.status, ok.outcome) == (served.headers["x-compose-upstream-provider"], 200, "ok")
    assert (error.provider, error.attempts, error.status, error.outcome, error.cost_usd) == (
        "openai",
        1,
        400,
        "error",
        0.0,
    )


def test_a_stream_the_client_cuts_short_records_what_was_relayed(gateway: Any, upstream: Any) -> None:
    chunk = content_chunk("tick ")
    upstream.script({"sse": [chunk] * 200, "event_delay": 0.02})  # no usage chunk: it never gets that far
    body = {"model": "openai/gpt-4.1", "messages": HELLO, "stream": True}
    headers = {"Authorization": f"Bearer {gateway.key}"}
    with httpx.stream("POST", gateway.root + CHAT, json=body, headers=headers, timeout=10) as response:
        request_id = response.headers["x-request-id"]
        lines = response.iter_lines()
        for _ in range(10):
            next(line for line in lines if line.startswith("data: "))
    row = ledger_rows(gateway.env, [request_id])[request_id]
    assert (row.outcome, row.estimated, row.status) == ("client_closed", True, 200)
    assert 10 <= row.completion_tokens < 200, "about one token per relayed chunk"
    assert row.prompt_tokens > 0 and row.cost_usd > 0


def test_sigterm_during_load_loses_no_rows(fake: Any, tmp_path_factory: pytest.TempPathFactory) -> None:
    from tests.servers import run_gateway

    env = {"OPENAI_API_KEY": PROVIDER_KEY, "OPENAI_BASE_URL": fake.url}
    with run_gateway(tmp_path_factory.mktemp("sigterm"), env) as gw:
        fake.reset()
        fake.script(*[{"json": completion(3, 1), "delay": 0.3}] * 40)

        def call(_: int) -> str | None:
            try:
                r = httpx.post(
                    gw.url + "/chat/completions",
                    json={"model": "openai/gpt-4.1", "messages": HELLO},
                    headers={"Authorization": f"Bearer {gw.key}"},
                    timeout=20,
                )
            except httpx.HTTPError:
                return None  # refused once shutdown began: never admitted, so no row is owed
            return r.headers.get("x-request-id") if r.status_code == 200 else None

        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            futures = [pool.submit(call, i) for i in range(40)]
            while len(fake.requests()) < 8:  # in flight upstream, then stop the gateway under them
                time.sleep(0.02)
            gw.process.send_signal(signal.SIGTERM)
            served = [rid for f in futures if (rid := f.result())]
        # uvicorn shuts down gracefully, then re-raises the signal it caught: -SIGTERM is a clean exit
        assert gw.process.wait(timeout=30) in (0, -signal.SIGTERM)
        assert "Traceback" not in gw.log.read_text()
    assert len(served) >= 8, (served, gw.log.read_text()[-3000:])
    rows = ledger_rows(gw.env, served, timeout=0)
    assert sorted(rows) == sorted(served), "every answered request has its row after SIGTERM"


def test_engine_usage_reports_per_key_model_provider_and_day(gateway: Any, http: httpx.Client) -> None:
    import json

    response = http.post(CHAT, json={"model": "openai/gpt-4.1-mini", "messages": HELLO})
    ledger_rows(gateway.env, [response.headers["x-request-id"]])
    report = gateway.engine("usage", "--json", "--key", "e2e", "--by", "key,model,provider,day")
    assert report.returncode == 0, report.stderr
    entries = json.loads(report.stdout)
    [mini] = [e for e in entries if e["model"] == "openai/gpt-4.1-mini"]
    assert mini["key"] == "e2e" and mini["provider"] == "openai" and mini["requests"] >= 1
    assert mini["day"] == time.strftime("%Y-%m-%d", time.gmtime())
    table = gateway.engine("usage", "--by", "model")
    assert table.returncode == 0 and "openai/gpt-4.1-mini" in table.stdout and "COST_USD" in table.stdout
    assert gateway.engine("usage", "--by", "colour").returncode == 2
