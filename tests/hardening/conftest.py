"""The probe gateway: `engine serve` with the shipped specs plus `faulty.toml`, whose upstream is the fault
server (`fault_upstream.py`). Every probe's answers go through `audited`, the leak audit."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.hardening.fault_upstream import PROVIDER_KEY
from tests.servers import REPO, Gateway, free_port, run_gateway, stop, wait_for_port

HERE = Path(__file__).parent
CHAT = "/external/v1/chat/completions"
RESPONSES = "/external/v1/responses"
HELLO = [{"role": "user", "content": "Say hello."}]


@contextlib.contextmanager
def run_fault_upstream(bomb_mb: int = 256) -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.hardening.fault_upstream", "--port", str(port), "--bomb-mb", str(bomb_mb)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(port, process)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        stop(process)


@contextlib.contextmanager
def run_probe_gateway(
    tmp: Path, fault_url: str, routes: dict[str, str] | None = None, read_timeout: float | None = None
) -> Iterator[Gateway]:
    """`engine serve` in front of the fault upstream; `routes` replaces text in routes.toml (a setting's line),
    `read_timeout` the upstream's (2 s, for the hang probes; a load of large answers wants more)."""
    env = {"FAULTY_API_KEY": PROVIDER_KEY, "FAULTY_BASE_URL": fault_url}
    faulty = (HERE / "faulty.toml").read_text()
    if read_timeout is not None:
        assert "\nread = 2\n" in faulty
        faulty = faulty.replace("\nread = 2\n", f"\nread = {read_timeout:g}\n", 1)
    providers = {"faulty.toml": faulty}
    with run_gateway(tmp, env, extra_providers=providers, routes_overrides=routes) as gateway:
        yield gateway


@pytest.fixture(scope="package")
def fault_url() -> Iterator[str]:
    with run_fault_upstream() as url:
        yield url


@pytest.fixture(scope="package")
def probe(fault_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with run_probe_gateway(tmp_path_factory.mktemp("probe"), fault_url) as gateway:
        yield gateway


def secrets(gateway: Gateway, fault_url: str) -> list[str]:
    """What no client may ever see: the provider key (whole, without prefix, in any case), the upstream URL
    and host, and the gateway key beyond its redacted prefix."""
    host = fault_url.split("//", 1)[1].split("/", 1)[0]
    return [PROVIDER_KEY, PROVIDER_KEY[3:], "PROVIDERSECRET", fault_url, host, gateway.key.split("_", 1)[-1]]


def leaks(text: str, gateway: Gateway, fault_url: str) -> list[str]:
    lowered = text.lower()
    found = [s for s in secrets(gateway, fault_url) if s.lower() in lowered]
    found += [marker for marker in ("Traceback", 'File "', "localhost:") if marker in text]
    return found


def openai_error(response: httpx.Response) -> dict[str, Any] | None:
    """The error object when the body is OpenAI's four-key error shape, else None."""
    try:
        body = response.json()
    except ValueError:
        return None
    if not isinstance(body, dict) or set(body) != {"error"} or not isinstance(body["error"], dict):
        return None
    error = body["error"]
    if set(error) != {"message", "type", "param", "code"} or not isinstance(error["message"], str):
        return None
    return error


@pytest.fixture
def audited(probe: Gateway, fault_url: str) -> Iterator[Any]:
    """Raw HTTP to the probe gateway; every answer (status line, headers, body) is checked for leaks."""

    def check(response: httpx.Response) -> None:
        response.read()
        text = "\n".join([f"{k}: {v}" for k, v in response.headers.items()] + [response.text])
        assert not leaks(text, probe, fault_url), (response.request.url, leaks(text, probe, fault_url), text[:2000])

    headers = {"Authorization": f"Bearer {probe.key}"}
    with httpx.Client(base_url=probe.root, headers=headers, timeout=30, event_hooks={"response": [check]}) as client:
        yield client
