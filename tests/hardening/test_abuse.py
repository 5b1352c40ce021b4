"""Clients that misbehave cannot make the gateway hold memory for them: a large JSON answer goes out in parts,
each when the client has taken the one before, and a client that takes nothing for `answer_idle_seconds` is
dropped with its answer; meanwhile other clients are served. The figures are the `engine serve` process's RSS,
from /proc. `bench/probe.py never-reading` is the same probe at 50 clients, with its figures printed.

A client that hangs up mid-call (JSON or stream) cancels the upstream call within a second:
tests/test_e2e_resilience.py (`test_a_client_that_hangs_up_on_a_json_call_…`,
`test_a_client_that_stops_reading_a_stream_then_leaves_…`).
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.hardening.conftest import CHAT, HELLO, run_probe_gateway
from tests.servers import Gateway

IDLE = 2  # answer_idle_seconds of this module's gateway
ANSWER_MIB = 10  # the fault upstream's `big_json`
BIG = {"model": "faulty/big_json", "messages": HELLO}


@pytest.fixture(scope="module")
def gateway(fault_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """The probe gateway, with a short idle bound; and an upstream read timeout that a burst of 10 MiB answers
    on a busy machine cannot reach (the hang probes' 2 s would turn some into 504s, which hold nothing)."""
    routes = {"answer_idle_seconds = 30": f"answer_idle_seconds = {IDLE}"}
    with run_probe_gateway(tmp_path_factory.mktemp("abuse"), fault_url, routes, read_timeout=30) as running:
        with httpx.Client(base_url=running.root, headers={"Authorization": f"Bearer {running.key}"}) as client:
            assert client.post(CHAT, json=BIG, timeout=60).status_code == 200  # code paths and allocator warmed
        yield running


def big_request(gateway: Gateway) -> bytes:
    body = json.dumps(BIG).encode()
    head = (
        f"POST /external/v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {gateway.key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


@contextlib.contextmanager
def never_reading(gateway: Gateway, count: int) -> Iterator[list[socket.socket]]:
    """`count` clients that ask for the 10 MiB answer and read none of it (a small receive window, as on a slow
    link, so the kernel takes little of it); they leave at the end."""
    port = int(gateway.root.rsplit(":", 1)[1])
    clients = []
    try:
        for _ in range(count):
            client = socket.socket()
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
            client.connect(("127.0.0.1", port))
            client.sendall(big_request(gateway))
            clients.append(client)
        yield clients
    finally:
        for client in clients:
            client.close()


def settle(gateway: Gateway, below: float, within: float) -> float:
    """The gateway's RSS once it is under `below` MiB, or after `within` seconds."""
    deadline = time.monotonic() + within
    while (rss := gateway.rss_mb()) >= below and time.monotonic() < deadline:
        time.sleep(0.2)
    return rss


def read_all(client: socket.socket) -> bytes:
    client.settimeout(10)
    received = bytearray()
    while chunk := client.recv(1 << 20):
        received += chunk
    return bytes(received)


def test_clients_that_never_read_are_dropped_and_their_memory_freed_while_others_are_served(
    gateway: Gateway,
) -> None:
    count = 20
    baseline = gateway.rss_mb()
    peak = baseline
    headers = {"Authorization": f"Bearer {gateway.key}"}
    with never_reading(gateway, count) as clients, httpx.Client(base_url=gateway.root, headers=headers) as normal:
        started = time.monotonic()
        while time.monotonic() - started < IDLE:  # meanwhile, a normal client is served as usual
            began = time.monotonic()
            ok = normal.post(CHAT, json={"model": "faulty/ok", "messages": HELLO}, timeout=10)
            assert ok.status_code == 200 and ok.json()["choices"][0]["message"]["content"]
            assert time.monotonic() - began < 5
            peak = max(peak, gateway.rss_mb())
        # each waiting answer costs about its own size (10 MiB), not copies of it
        assert peak - baseline < count * ANSWER_MIB * 1.6, (baseline, peak)
        # the clients are still connected, but dropped: the memory of their answers is given back
        after = settle(gateway, baseline + 60, within=IDLE + 15)
        assert after < baseline + 60, (baseline, peak, after)
        for client in clients:
            head, _, body = read_all(client).partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200")
            length = int(next(h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length:"))[15:])
            assert len(body) < length, "the connection was closed before the answer was taken"
    assert "client read none of a" in gateway.log.read_text()


def test_clients_that_leave_mid_answer_free_its_memory_at_once(gateway: Gateway) -> None:
    baseline = gateway.rss_mb()
    with never_reading(gateway, 10):
        deadline = time.monotonic() + 5
        while (held := gateway.rss_mb()) < baseline + 50 and time.monotonic() < deadline:
            time.sleep(0.05)
    assert held > baseline + 50, "the answers were being sent when the clients left"
    assert settle(gateway, baseline + 40, within=IDLE - 0.5) < baseline + 40


def test_a_client_reading_very_slowly_gets_the_whole_answer_intact(gateway: Gateway) -> None:
    """It reads 10 MiB at ~1.5 MiB/s, so the answer takes several times the idle bound: the bound is on how long
    the client takes nothing, not on the whole answer."""
    port = int(gateway.root.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as client:
        client.sendall(big_request(gateway))
        client.settimeout(10)
        received = bytearray()
        started = time.monotonic()
        while b"\r\n\r\n" not in received or len(received) < expected(received):
            chunk = client.recv(65536)
            assert chunk, f"closed after {len(received)} bytes"
            received += chunk
            time.sleep(0.04)
        took = time.monotonic() - started
    head, _, body = bytes(received).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    answer = json.loads(body)
    assert answer["padding"] == "p" * (ANSWER_MIB << 20) and answer["choices"][0]["message"]["content"]
    assert took > 2 * IDLE, took


def expected(received: bytearray) -> int:
    """The whole answer's size in bytes, from its head."""
    head = bytes(received).split(b"\r\n\r\n", 1)[0]
    length = next(h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length:"))
    return len(head) + 4 + int(length[15:])


def test_a_stream_client_that_reads_nothing_is_dropped_and_the_upstream_call_ended(
    gateway: Gateway, fault_url: str
) -> None:
    """It stays connected and takes nothing: after `answer_idle_seconds` of a send waiting for it, the gateway
    ends the connection and the upstream stream with it, instead of holding both as long as the client likes."""
    port = int(gateway.root.rsplit(":", 1)[1])
    body = json.dumps({"model": "faulty/flood_stream", "messages": HELLO, "stream": True}).encode()
    head = (
        f"POST /external/v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {gateway.key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    with socket.socket() as client:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        client.connect(("127.0.0.1", port))
        client.sendall(head.encode() + body)
        assert client.recv(4096).startswith(b"HTTP/1.1 200")
        stopped = time.time()  # from here on it reads nothing, and stays
        control = fault_url.rsplit("/v1", 1)[0]  # the fault upstream's own root
        before = httpx.get(f"{control}/_faults").json()["cancelled"].get("flood_stream")
        cancelled = None
        deadline = time.monotonic() + IDLE + 15
        while cancelled is None and time.monotonic() < deadline:
            time.sleep(0.2)
            seen = httpx.get(f"{control}/_faults").json()["cancelled"].get("flood_stream")
            cancelled = seen if seen != before else None
        assert cancelled is not None, "the upstream stream outlived a client that read none of it"
        assert cancelled > stopped + IDLE * 0.5, "dropped before the client had been idle for the bound"
        client.settimeout(10)
        while client.recv(1 << 20):  # what the kernel holds, then the end the gateway closed
            pass
    assert "client read none of a stream" in gateway.log.read_text()
