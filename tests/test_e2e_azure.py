"""Azure OpenAI end to end: `engine serve` with both Azure and OpenAI configured, in front of the loopback
Azure fake (tests/fakes/azure_fake.py), which insists on the `api-key` header, deployment paths with a
dated `api-version`, and known deployments; the client is the official OpenAI SDK.

The documented example of the external API (`"model": "gpt-5.5"`) is served by Azure, Azure's filter
annotations never reach the client, and every filtered prompt (a 400, a 200, a stream) is the one
content-filter error with the diagnostic headers intact.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import PROVIDER_KEY, WEATHER_TOOL
from tests.fakes.azure_fake import API_KEY
from tests.servers import Fake, Gateway, run_fake, run_gateway

HI = [{"role": "user", "content": "Say hello."}]
CONTENT_FILTER_MESSAGE = "The request was blocked by the upstream provider's content filter."


@pytest.fixture(scope="module")
def azure_fake() -> Iterator[Fake]:
    with run_fake("tests.fakes.azure_fake", "", "--deployments", "gpt-5.5,gpt-5.4,gpt-4.1,gpt-4.1-mini") as running:
        yield running


@pytest.fixture(scope="module")
def azure_gateway(azure_fake: Fake, fake: Fake, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    env = {
        "AZURE_OPENAI_API_KEY": API_KEY,
        "AZURE_OPENAI_ENDPOINT": azure_fake.url,
        "OPENAI_API_KEY": PROVIDER_KEY,  # OpenAI is configured too: Azure is preferred, by its priority
        "OPENAI_BASE_URL": fake.url,
    }
    with run_gateway(tmp_path_factory.mktemp("azure-gateway"), env) as running:
        yield running


@pytest.fixture
def azure(azure_fake: Fake) -> Fake:
    azure_fake.reset()
    return azure_fake


@pytest.fixture
def sdk(azure_gateway: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=azure_gateway.url, api_key=azure_gateway.key, max_retries=0, timeout=30)


def diagnostics(headers: Any) -> tuple[str, str, str]:
    return (
        headers["x-compose-public-model"],
        headers["x-compose-upstream-provider"],
        headers["x-compose-upstream-model"],
    )


def test_the_documented_example_is_served_by_azure(sdk: openai.OpenAI, azure: Fake) -> None:
    raw = sdk.chat.completions.with_raw_response.create(model="gpt-5.5", messages=HI)
    answer = raw.parse()
    assert answer.choices[0].message.content == "Hello from the fake upstream."
    assert diagnostics(raw.headers) == ("gpt-5.5", "azure", "gpt-5.5")
    [sent] = azure.requests()
    assert sent["path"] == "/openai/v1/chat/completions"  # gpt-5.x rows use the GA v1 form
    assert sent["headers"]["api-key"] == API_KEY and "Authorization" not in sent["headers"]
    assert sent["body"]["model"] == "gpt-5.5"
    dumped = answer.model_dump()
    assert "prompt_filter_results" not in dumped and "content_filter_results" not in dumped["choices"][0]


def test_deployment_form_models_use_their_deployment_path_and_api_version(sdk: openai.OpenAI, azure: Fake) -> None:
    raw = sdk.chat.completions.with_raw_response.create(model="gpt-4.1", messages=HI)
    assert diagnostics(raw.headers) == ("gpt-4.1", "azure", "gpt-4.1")
    assert azure.requests()[-1]["path"] == "/openai/deployments/gpt-4.1/chat/completions?api-version=2024-10-21"


def test_gpt5_tools_with_reasoning_go_over_azures_responses_path(sdk: openai.OpenAI, azure: Fake) -> None:
    answer = sdk.chat.completions.create(model="gpt-5.5", messages=HI, tools=[WEATHER_TOOL])  # type: ignore[list-item]
    assert azure.requests()[-1]["path"] == "/openai/v1/responses"
    assert answer.choices[0].message.tool_calls


def test_each_id_is_listed_once(azure_gateway: Gateway) -> None:
    listed = httpx.get(f"{azure_gateway.url}/models", headers={"Authorization": f"Bearer {azure_gateway.key}"})
    ids = [m["id"] for m in listed.json()["data"]]
    assert len(ids) == len(set(ids))
    by_id = {m["id"]: m for m in listed.json()["data"]}
    assert by_id["gpt-5.5"]["owned_by"] == "azure" and "openai/gpt-5.5" in by_id


def _assert_content_filter(error: openai.APIStatusError) -> None:
    response = error.response
    assert response.status_code == 400
    body = response.json()
    assert body["error"]["code"] == "content_filter" and body["error"]["type"] == "invalid_request_error"
    assert body["error"]["message"].startswith(CONTENT_FILTER_MESSAGE)
    for detail in ("innererror", "jailbreak", "ResponsibleAIPolicyViolation", "go.microsoft.com", "filtered"):
        assert detail not in response.text
    assert diagnostics(response.headers) == ("gpt-4.1", "azure", "gpt-4.1"), "the headers survive"


@pytest.mark.parametrize("marker", ["[[blocked]]", "[[blocked-200]]"], ids=["azure-400", "azure-200"])
def test_a_filtered_prompt_is_the_one_content_filter_error(sdk: openai.OpenAI, azure: Fake, marker: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(model="gpt-4.1", messages=[{"role": "user", "content": f"hi {marker}"}])
    _assert_content_filter(caught.value)


@pytest.mark.parametrize("marker", ["[[blocked]]", "[[blocked-200]]"], ids=["azure-400", "leading-chunk"])
def test_a_filtered_stream_is_an_http_400_not_a_200_with_an_error(sdk: openai.OpenAI, azure: Fake, marker: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(
            model="gpt-4.1", messages=[{"role": "user", "content": f"hi {marker}"}], stream=True
        )
    _assert_content_filter(caught.value)


def test_a_stream_whose_output_is_filtered_keeps_finish_reason_content_filter(
    azure_gateway: Gateway, azure: Fake
) -> None:
    ask = [{"role": "user", "content": "a story [[filtered-output]]"}]
    body = {"model": "gpt-4.1", "messages": ask, "stream": True}
    headers = {"Authorization": f"Bearer {azure_gateway.key}"}
    with httpx.stream("POST", f"{azure_gateway.url}/chat/completions", json=body, headers=headers, timeout=30) as r:
        assert r.status_code == 200
        raw = r.read().decode()
    chunks = [json.loads(line[6:]) for line in raw.splitlines() if line.startswith("data: {")]
    assert raw.rstrip().endswith("data: [DONE]")
    assert all(chunk["choices"] for chunk in chunks), "Azure's leading filter-results chunk is not forwarded"
    assert "content_filter_results" not in raw and "prompt_filter_results" not in raw
    assert chunks[-1]["choices"][0]["finish_reason"] == "content_filter"
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == "Hello from the fake upstream."


def test_an_answer_whose_output_is_filtered_keeps_finish_reason_content_filter(sdk: openai.OpenAI) -> None:
    answer = sdk.chat.completions.create(model="gpt-4.1", messages=[{"role": "user", "content": "[[filtered-output]]"}])
    assert answer.choices[0].finish_reason == "content_filter"
    assert "content_filter_results" not in json.dumps(answer.model_dump())
