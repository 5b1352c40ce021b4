"""Probe the HTTP server's own bounds (routes.toml `[server]`, `engine/server.py`) through `engine serve`.

    .venv/bin/python bench/probe_server.py slowloris [--connections 200] [--header-timeout 2] [--every 0.5]
    .venv/bin/python bench/probe_server.py hotpath [--rounds 10] [--requests 20000]

`slowloris`: the shipped specs (only `header_timeout_seconds` replaced, so a run is short), one worker; N
connections each send a request head a byte every `--every` seconds, never finishing it. Printed: how long
opening them took; how long each took to be answered (min / median / max, from its own connect) and with
what (408; a 408 early, ended to make room at `max_connections`; 503; or closed); when the last was
answered; the gateway's RSS and open files idle and with them all open; a normal request's latency and
status while they are open (median / max of `--samples`). Everything runs on loopback and stops by itself
(`--time-limit`).

`hotpath`: what the bounds cost a request that is not near them, in process, on uvloop: uvicorn's httptools
protocol and `GatewayProtocol` each serve the same kept-alive connection (a fake transport) a typical
request (an SDK's head, ~400 bytes, and a small JSON body, in one read) answered by a minimal ASGI app,
interleaved rounds; printed: the median µs per request of each and their ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.servers import Gateway, run_gateway  # noqa: E402

SHIPPED_TIMEOUT = "header_timeout_seconds = 10.0"


async def _slow_connection(port: int, every: float, limit: float) -> tuple[float, str]:
    """One slowloris connection: (seconds from connect to the gateway ending it, how it ended)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError as exc:
        return loop.time() - start, f"connect failed: {type(exc).__name__}"
    head = b"GET /external/v1/models HTTP/1.1\r\nhost: gateway\r\nx-slow: " + b"a" * 100_000

    async def drip() -> None:
        for byte in head:
            writer.write(bytes([byte]))
            await asyncio.sleep(every)

    dripping = asyncio.create_task(drip())
    try:
        answer = await asyncio.wait_for(reader.read(), limit)
        outcome = answer.split(b" ", 2)[1].decode() if answer.startswith(b"HTTP/1.1 ") else "closed"
        if b"needed room" in answer:
            outcome += " (ended early for a new connection, at max_connections)"
    except TimeoutError:
        outcome = "still open"
    except OSError as exc:
        outcome = f"closed ({type(exc).__name__})"
    finally:
        dripping.cancel()
        writer.close()
    return loop.time() - start, outcome


async def _normal_requests(gateway: Gateway, samples: int, spacing: float) -> list[tuple[float, int]]:
    """Latency and status of normal requests (each on a new connection, as a new client's would be): a 503
    when the slow ones fill `max_connections`."""
    seen = []
    for _ in range(samples):
        async with httpx.AsyncClient(base_url=gateway.root, timeout=30) as client:
            start = time.monotonic()
            answer = await client.get("/external/v1/models", headers={"authorization": f"Bearer {gateway.key}"})
            seen.append((time.monotonic() - start, answer.status_code))
        await asyncio.sleep(spacing)
    return seen


async def _slowloris(gateway: Gateway, args: argparse.Namespace) -> None:
    port = int(gateway.root.rsplit(":", 1)[1])
    limit = args.header_timeout + 30
    idle_rss, idle_fds = gateway.rss_mb(), gateway.fds()
    start = time.monotonic()
    slow = [asyncio.create_task(_slow_connection(port, args.every, limit)) for _ in range(args.connections)]
    await asyncio.sleep(0)  # let every task start connecting
    held, opened = idle_fds, 0.0  # until the gateway holds them all, or (at its cap) holds no more
    while held < idle_fds + args.connections and time.monotonic() - start < args.header_timeout / 2:
        await asyncio.sleep(0.1)
        if gateway.fds() == held:
            break
        held, opened = gateway.fds(), time.monotonic() - start
    normal = await _normal_requests(gateway, args.samples, args.header_timeout / 4 / args.samples)
    open_rss, open_fds = gateway.rss_mb(), gateway.fds()
    ended = await asyncio.gather(*slow)
    last = time.monotonic() - start
    seconds = sorted(s for s, _ in ended)
    outcomes = collections.Counter(outcome for _, outcome in ended)

    print(f"slowloris: {args.connections} connections, a header byte every {args.every:g} s;")
    print(f"  header_timeout_seconds = {args.header_timeout:g} (routes.toml [server])")
    print(f"  opened (gateway holds them) in {opened:.2f} s")
    print(
        f"  answered after (from each connect): min {seconds[0]:.2f} s, median {statistics.median(seconds):.2f} s,"
        f" max {seconds[-1]:.2f} s; the last {last:.2f} s after the first connect"
    )
    print("  outcomes: " + ", ".join(f"{outcome}: {n}" for outcome, n in outcomes.most_common()))
    print(
        f"  gateway RSS: {idle_rss:.1f} MiB idle, {open_rss:.1f} MiB with them open; open files {idle_fds} → {open_fds}"
    )
    latencies = [s for s, _ in normal]
    statuses = collections.Counter(status for _, status in normal)
    print(
        f"  a normal request meanwhile ({len(normal)} samples, new connection each):"
        f" median {statistics.median(latencies) * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms; statuses "
        + ", ".join(f"{status}: {n}" for status, n in sorted(statuses.items()))
    )


class _Transport(asyncio.Transport):
    """Enough of a socket transport for uvicorn's protocol: writes are counted, never sent."""

    def __init__(self) -> None:
        super().__init__()
        self.written = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += len(data)

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 8080)}.get(name, default)


async def _tiny_app(scope: Any, receive: Any, send: Any) -> None:
    """Read the body, answer `{}`: the least an ASGI app does per request."""
    await receive()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"{}"})


HOTPATH_BODY = b'{"model":"openai/gpt-4.1","messages":[{"role":"user","content":"Say hello."}]}'
HOTPATH_REQUEST = (
    b"POST /external/v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1:8080\r\naccept: application/json\r\n"
    b"accept-encoding: gzip, deflate\r\nconnection: keep-alive\r\ncontent-type: application/json\r\n"
    b"user-agent: OpenAI/Python 1.99.0\r\nx-stainless-lang: python\r\nx-stainless-package-version: 1.99.0\r\n"
    b"x-stainless-os: Linux\r\nx-stainless-arch: x64\r\nx-stainless-runtime: CPython\r\n"
    b"x-stainless-runtime-version: 3.11.7\r\nauthorization: Bearer compose-0123456789abcdef\r\n"
    b"x-stainless-retry-count: 0\r\ncontent-length: %d\r\n\r\n%s" % (len(HOTPATH_BODY), HOTPATH_BODY)
)


async def _serve(protocol_class: type[Any], requests: int) -> float:
    """µs per request: `requests` requests through one protocol instance, each answered before the next."""
    from uvicorn.config import Config
    from uvicorn.server import ServerState

    config = Config(app=_tiny_app, lifespan="off", log_level="warning")
    protocol = protocol_class(config=config, server_state=ServerState(), app_state={})
    transport = _Transport()
    protocol.connection_made(transport)
    start = time.perf_counter()
    for _ in range(requests):
        protocol.data_received(HOTPATH_REQUEST)
        await asyncio.sleep(0)  # the app's task: receive, send, done
        await asyncio.sleep(0)
    seconds = time.perf_counter() - start
    assert protocol.server_state.total_requests == requests, "a request was not answered"
    protocol.connection_lost(None)
    return seconds / requests * 1e6


def _hotpath(args: argparse.Namespace) -> None:
    import uvloop
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    from engine.server import GatewayProtocol

    targets: dict[str, type[Any]] = {"uvicorn httptools": HttpToolsProtocol, "GatewayProtocol": GatewayProtocol}
    samples: dict[str, list[float]] = {name: [] for name in targets}
    loop = uvloop.new_event_loop()
    try:
        for cls in targets.values():  # warm-up
            loop.run_until_complete(_serve(cls, args.requests // 10))
        for round_ in range(args.rounds):
            order = list(targets.items())
            for name, cls in order if round_ % 2 == 0 else reversed(order):
                samples[name].append(loop.run_until_complete(_serve(cls, args.requests)))
    finally:
        loop.close()
    base, ours = (statistics.median(samples[name]) for name in targets)
    print(f"hotpath: {args.rounds} interleaved rounds x {args.requests} kept-alive requests ({len(HOTPATH_REQUEST)} B)")
    for name in targets:
        print(f"  {name:<18} median {statistics.median(samples[name]):.2f} µs/request")
    print(f"  GatewayProtocol / uvicorn httptools: {ours / base:.3f}x ({ours - base:+.2f} µs/request)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode", required=True)
    slowloris = sub.add_parser("slowloris", help="N connections trickling header bytes")
    slowloris.add_argument("--connections", type=int, default=200)
    slowloris.add_argument("--header-timeout", type=float, default=2.0, help="routes.toml header_timeout_seconds")
    slowloris.add_argument("--every", type=float, default=0.5, help="seconds between a connection's bytes")
    slowloris.add_argument("--samples", type=int, default=20, help="normal requests while they are open")
    slowloris.add_argument("--time-limit", type=float, default=120.0, help="seconds before the run gives up")
    hotpath = sub.add_parser("hotpath", help="per-request cost of the bounds, in process, A/B with uvicorn's")
    hotpath.add_argument("--rounds", type=int, default=10)
    hotpath.add_argument("--requests", type=int, default=20000, help="per protocol per round")
    args = parser.parse_args()
    if args.mode == "hotpath":
        _hotpath(args)
        return 0

    overrides = {SHIPPED_TIMEOUT: f"header_timeout_seconds = {args.header_timeout}"}
    with (
        tempfile.TemporaryDirectory() as tmp,
        run_gateway(Path(tmp), {}, test_routes=False, routes_overrides=overrides) as gw,
    ):
        with httpx.Client(base_url=gw.root, timeout=30) as client:  # warm: imports and first-request work done
            client.get("/external/v1/models", headers={"authorization": f"Bearer {gw.key}"}).raise_for_status()
        asyncio.run(asyncio.wait_for(_slowloris(gw, args), args.time_limit))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
