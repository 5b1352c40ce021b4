"""Probe the HTTP server's own bounds (routes.toml `[server]`, `engine/server.py`) through `engine serve`.

    .venv/bin/python bench/probe_server.py slowloris [--connections 200] [--header-timeout 2] [--every 0.5]

`slowloris`: the shipped specs (only `header_timeout_seconds` replaced, so a run is short), one worker; N
connections each send a request head a byte every `--every` seconds, never finishing it. Printed: how long
opening them took; how long each took to be answered (min / median / max, from its own connect) and with
what (408; a 408 early, ended to make room at `max_connections`; 503; or closed); when the last was
answered; the gateway's RSS and open files idle and with them all open; a normal request's latency and
status while they are open (median / max of `--samples`). Everything runs on loopback and stops by itself
(`--time-limit`).
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode", required=True)
    slowloris = sub.add_parser("slowloris", help="N connections trickling header bytes")
    slowloris.add_argument("--connections", type=int, default=200)
    slowloris.add_argument("--header-timeout", type=float, default=2.0, help="routes.toml header_timeout_seconds")
    slowloris.add_argument("--every", type=float, default=0.5, help="seconds between a connection's bytes")
    slowloris.add_argument("--samples", type=int, default=20, help="normal requests while they are open")
    slowloris.add_argument("--time-limit", type=float, default=120.0, help="seconds before the run gives up")
    args = parser.parse_args()

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
