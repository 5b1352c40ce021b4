"""The hardening probes of issue 6, as one runner: the gateway against hostile clients and a hostile upstream.

    .venv/bin/python bench/probe.py soak                 # 600 s of mixed traffic: RSS, fds, leak audit
    .venv/bin/python bench/probe.py soak --seconds 60
    .venv/bin/python bench/probe.py never-reading        # 50 clients that never read a 10 MiB answer
    .venv/bin/python bench/probe.py bomb                 # a gzip bomb (2 GiB inflated) from the upstream
    .venv/bin/python bench/probe.py disconnect           # client hang-up -> upstream cancellation, in ms

Every mode starts its own fault upstream (`tests/hardening/fault_upstream.py`) and `engine serve` with
`faulty.toml` (`tests/hardening/conftest.py`), on loopback, in a temporary directory, and stops them at the
end: nothing leaves the host, and every mode stops by itself. Figures are read from /proc of the `engine serve`
process (VmRSS, VmHWM, open fds). `bench/README.md` says what each figure means.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import socket
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "bench")]

import httpx  # noqa: E402
from run import upstream_connections  # noqa: E402

from tests.hardening.conftest import CHAT, HELLO, RESPONSES, leaks, run_fault_upstream, run_probe_gateway  # noqa: E402
from tests.servers import Gateway  # noqa: E402

HOST = "127.0.0.1"


# ------------------------------------------------------------------------------------------------ helpers


def status_of(pid: int) -> dict[str, float]:
    """The process's memory figures from /proc/<pid>/status, in MiB (VmRSS, VmHWM, ...)."""
    found: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if value.strip().endswith("kB"):
            found[name] = int(value.split()[0]) / 1024
    return found


def reset_peak(pid: int) -> None:
    """Restart VmHWM from the current RSS, so a phase's peak is its own."""
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/clear_refs").write_text("5")


@contextlib.contextmanager
def probe_gateway(
    bomb_mb: int = 256, routes: dict[str, str] | None = None, read_timeout: float | None = None
) -> Iterator[tuple[Gateway, str]]:
    """The fault upstream and `engine serve` in front of it, for one mode; `routes` edits routes.toml."""
    with (
        tempfile.TemporaryDirectory(prefix="probe-") as tmp,
        run_fault_upstream(bomb_mb) as fault_url,
        run_probe_gateway(Path(tmp), fault_url, routes, read_timeout) as gateway,
    ):
        yield gateway, fault_url


def raw_request(gateway: Gateway, path: str, body: dict[str, Any]) -> bytes:
    """A whole HTTP/1.1 request to the gateway, as bytes: for clients that do not behave like a client library."""
    data = json.dumps(body).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {HOST}\r\nAuthorization: Bearer {gateway.key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
    )
    return head.encode() + data


def gateway_port(gateway: Gateway) -> int:
    return int(gateway.root.rsplit(":", 1)[1])


def chat(fault: str, **extra: Any) -> dict[str, Any]:
    return {"model": f"faulty/{fault}", "messages": HELLO, **extra}


# ------------------------------------------------------------------------------------------ never-reading


def never_reading(clients: int, hold: float, answer_idle: float | None, rounds: int) -> list[dict[str, Any]]:
    """`clients` connections each ask for a valid 10 MiB JSON answer (`big_json`) and never read a byte of it,
    for `hold` seconds, then leave; `rounds` times, against the same gateway. A normal client is served
    meanwhile. The gateway must not keep what it cannot send: its peak RSS over the baseline, divided by the
    clients, is what each one costs; and a later round must not end higher than the first (bounded, not
    accumulating)."""
    routes = {"answer_idle_seconds = 30": f"answer_idle_seconds = {answer_idle:g}"} if answer_idle else None
    # The upstream sends 50 x 10 MiB at once on a shared machine: its 2 s read timeout (for the hang probes) would
    # turn some into 504s, which would flatter the figure.
    with probe_gateway(routes=routes, read_timeout=30) as (gateway, _):
        pid = gateway.process.pid
        with httpx.Client(base_url=gateway.root, headers={"Authorization": f"Bearer {gateway.key}"}) as client:
            for fault in ("ok", "big_json", "big_json"):  # warm the code paths and the allocator once
                assert client.post(CHAT, json=chat(fault), timeout=60).status_code == 200
            time.sleep(0.5)
            baseline = status_of(pid)["VmRSS"]
            print(f"  {clients} clients ask for a 10 MiB answer and read nothing; baseline RSS {baseline:.1f} MiB")
            found = [_never_reading_round(gateway, client, clients, hold, baseline) for _ in range(rounds)]
    for number, row in enumerate(found, 1):
        print(
            f"  round {number}: peak RSS {row['peak_rss_mib']:.1f} MiB = baseline {baseline:.1f}"
            f" + {row['peak_rss_mib'] - baseline:.1f} MiB ({row['per_client_mib']:.2f} MiB per never-reading client);"
            f" 3 s after they left: {row['rss_after_leaving_mib']:.1f} MiB; normal client: {row['normal']}"
        )
    return found


def _never_reading_round(
    gateway: Gateway, client: httpx.Client, clients: int, hold: float, baseline: float
) -> dict[str, Any]:
    pid = gateway.process.pid
    reset_peak(pid)
    request = raw_request(gateway, CHAT, chat("big_json"))
    sockets = []
    for _ in range(clients):
        sock = socket.socket()
        # A small receive window, as a client on a slow link has: the kernel takes little of the answer.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        sock.connect((HOST, gateway_port(gateway)))
        sock.sendall(request)
        sockets.append(sock)
    print("  elapsed   RSS MiB   normal client (ms)")
    started = time.monotonic()
    served: list[float] = []
    while time.monotonic() - started < hold:
        began = time.monotonic()
        response = client.post(CHAT, json=chat("ok"), timeout=30)
        served.append((time.monotonic() - began) * 1000 if response.status_code == 200 else float("inf"))
        if response.status_code != 200:
            print(f"  the normal client got HTTP {response.status_code}: {response.text[:200]}")
        rss = status_of(pid)["VmRSS"]
        print(f"  {time.monotonic() - started:6.1f} {rss:9.1f}   {served[-1]:8.1f}", flush=True)
        time.sleep(1.0)
    peak = status_of(pid)["VmHWM"]
    statuses: dict[str, int] = {}
    for sock in sockets:  # what each got, as far as its first bytes say; then it leaves
        sock.settimeout(0.5)
        try:
            line = sock.recv(64).split(b"\r\n", 1)[0].decode("latin-1") or "closed"
        except OSError:
            line = "nothing"
        statuses[line] = statuses.get(line, 0) + 1
        sock.close()
    time.sleep(3.0)
    after = status_of(pid)["VmRSS"]
    print(f"  what the never-reading clients had been sent: {statuses}; 3 s after they left: RSS {after:.1f} MiB")
    normal = f"{len(served)} requests, slowest {max(served):.0f} ms, median {statistics.median(served):.0f} ms"
    return {
        "peak_rss_mib": round(peak, 1),
        "per_client_mib": round((peak - baseline) / clients, 2),
        "rss_after_leaving_mib": round(after, 1),
        "normal": normal,
    }


# -------------------------------------------------------------------------------------------------- bomb


def bomb(bomb_mb: int) -> dict[str, Any]:
    """The upstream answers a gzip bomb that inflates to `bomb_mb` MiB, as JSON and as a stream: the gateway
    stops at its answer cap, answers 502 upstream_response_too_large, and gives the memory back."""
    with probe_gateway(bomb_mb=bomb_mb) as (gateway, _):
        pid = gateway.process.pid
        with httpx.Client(base_url=gateway.root, headers={"Authorization": f"Bearer {gateway.key}"}) as client:
            client.post(CHAT, json=chat("ok"))
            time.sleep(0.5)
            baseline = status_of(pid)["VmRSS"]
            reset_peak(pid)
            rows = []
            for stream in (False, True):
                began = time.monotonic()
                response = client.post(CHAT, json=chat("gzip_bomb", stream=stream), timeout=60)
                took = time.monotonic() - began
                code = "upstream_response_too_large" if "upstream_response_too_large" in response.text else "?"
                rows.append((stream, response.status_code, code, took))
            peak = status_of(pid)["VmHWM"]
            time.sleep(2.0)
            after = status_of(pid)["VmRSS"]
            began = time.monotonic()
            ok = client.post(CHAT, json=chat("ok")).status_code
            ok_ms = (time.monotonic() - began) * 1000
    for stream, status, code, took in rows:
        print(f"  {'stream' if stream else 'json':<6}: HTTP {status} {code} in {took:.2f} s")
    print(
        f"  a {bomb_mb} MiB bomb: RSS baseline {baseline:.1f} MiB, peak {peak:.1f} MiB (+{peak - baseline:.1f}),"
        f" 2 s later {after:.1f} MiB ({after - baseline:+.1f}); a normal request after: HTTP {ok} in {ok_ms:.0f} ms"
    )
    return {"bomb_mib": bomb_mb, "baseline_rss_mib": baseline, "peak_rss_mib": peak, "after_rss_mib": after}


# -------------------------------------------------------------------------------------------- disconnect


async def _leave_after(gateway: Gateway, body: dict[str, Any], wait_for: bytes | None, after: float) -> float:
    """Send a request; leave once `wait_for` has arrived (or after `after` s); return the time.time() of leaving."""
    reader, writer = await asyncio.open_connection(HOST, gateway_port(gateway))
    writer.write(raw_request(gateway, CHAT if "messages" in body else RESPONSES, body))
    if wait_for is not None:
        received = b""
        while wait_for not in received:
            chunk = await reader.read(65536)
            assert chunk, "the gateway closed before the answer began"
            received += chunk
    else:
        await asyncio.sleep(after)
    left = time.time()
    writer.close()
    return left


def disconnect(rounds: int) -> dict[str, Any]:
    """A client hangs up mid-call: how long until the upstream sees its connection closed. JSON calls (the
    upstream holds the answer back, `slow_json`) and streams (a long one, `big_stream`, left after its first
    event). The fault upstream records when it saw each hang-up (`GET /_faults`)."""
    found: dict[str, list[float]] = {"json": [], "stream": []}
    with probe_gateway() as (gateway, fault_url):
        control = fault_url.rsplit("/v1", 1)[0]
        for _ in range(rounds):
            for kind, fault, wait_for, after in (
                ("json", "slow_json", None, 2.0),
                ("stream", "big_stream", b"data:", 0.0),
            ):
                before = httpx.get(f"{control}/_faults").json()["cancelled"].get(fault)
                left = asyncio.run(_leave_after(gateway, chat(fault, stream=kind == "stream"), wait_for, after))
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    seen = httpx.get(f"{control}/_faults").json()["cancelled"].get(fault)
                    if seen is not None and seen != before:
                        found[kind].append((seen - left) * 1000)
                        break
                    time.sleep(0.01)
                else:
                    found[kind].append(float("inf"))
    for kind, times in found.items():
        print(
            f"  {kind:<6}: client hang-up -> upstream sees it closed: median {statistics.median(times):.0f} ms,"
            f" max {max(times):.0f} ms over {len(times)} calls"
        )
    return {kind: {"median_ms": statistics.median(t), "max_ms": max(t)} for kind, t in found.items()}


# -------------------------------------------------------------------------------------------------- soak


@dataclass
class Soak:
    """What the soak's clients saw: answers per kind, failures, and every leak the audit found."""

    answers: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    leaks: list[str] = field(default_factory=list)


SOAK_KINDS: list[tuple[str, str, dict[str, Any]]] = [
    ("chat", CHAT, chat("ok")),
    ("chat-stream", CHAT, chat("ok", stream=True, stream_options={"include_usage": True})),
    ("responses", RESPONSES, {"model": "faulty/ok", "input": "hi"}),
    ("responses-stream", RESPONSES, {"model": "faulty/ok", "input": "hi", "stream": True}),
    ("bridged", RESPONSES, {"model": "faulty/bridged/ok", "input": "hi"}),
    ("bridged-stream", RESPONSES, {"model": "faulty/bridged/ok", "input": "hi", "stream": True}),
    ("error", CHAT, chat("leak500_fields")),
]


async def _soak_client(
    gateway: Gateway, fault_url: str, found: Soak, number: int, stop_at: float, client: httpx.AsyncClient
) -> None:
    """One client: the kinds of request in turn; every 20th request leaves a long stream after its first event."""
    turn = number
    while time.monotonic() < stop_at:
        turn += 1
        if turn % 20 == 0:
            await _leave_after(gateway, chat("big_stream", stream=True), b"data:", 0.0)
            found.answers["left-mid-stream"] = found.answers.get("left-mid-stream", 0) + 1
            continue
        kind, path, body = SOAK_KINDS[turn % len(SOAK_KINDS)]
        try:
            response = await client.post(path, json=body)
        except httpx.HTTPError as exc:
            found.failures.append(f"{kind}: {type(exc).__name__}")
            continue
        text = "\n".join([f"{k}: {v}" for k, v in response.headers.items()] + [response.text])
        found.leaks += [f"{kind}: {leak}" for leak in leaks(text, gateway, fault_url)]
        expected = 500 if kind == "error" else 200
        if response.status_code != expected or (kind.endswith("stream") and "data:" not in response.text):
            found.failures.append(f"{kind}: HTTP {response.status_code} {response.text[:200]}")
        found.answers[kind] = found.answers.get(kind, 0) + 1


async def _soak_load(gateway: Gateway, fault_url: str, seconds: float, concurrency: int, found: Soak) -> None:
    stop_at = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    headers = {"Authorization": f"Bearer {gateway.key}"}
    async with httpx.AsyncClient(base_url=gateway.root, headers=headers, timeout=30, limits=limits) as client:
        await asyncio.gather(*(_soak_client(gateway, fault_url, found, n, stop_at, client) for n in range(concurrency)))


def soak(seconds: float, concurrency: int, every: float, warmup: float) -> dict[str, Any]:
    """`seconds` of mixed traffic (chat and /responses, streaming and not, passthrough and bridged, upstream
    errors, clients leaving long streams) at `concurrency`; RSS and fds sampled every `every` s. After it, with
    no client connected: fds against the same idle count before it, and the log through the leak audit."""
    with probe_gateway() as (gateway, fault_url):
        pid = gateway.process.pid
        warm = Soak()
        asyncio.run(_soak_load(gateway, fault_url, min(warmup, seconds / 10), concurrency, warm))
        fault_port = int(fault_url.rsplit(":", 1)[1].split("/", 1)[0])

        def idle_fds() -> tuple[int, int]:
            """Open fds, and how many of them are pooled connections to the upstream (kept alive 30 s)."""
            return len(os.listdir(f"/proc/{pid}/fd")), upstream_connections(pid, fault_port)

        time.sleep(1.5)  # the warm-up's connections close: the idle fd count is what the gateway keeps itself
        idle_before = idle_fds()
        found = Soak()
        samples: list[tuple[float, float, int]] = []

        async def sampled() -> None:
            started = time.monotonic()
            load = asyncio.create_task(_soak_load(gateway, fault_url, seconds, concurrency, found))
            print("  elapsed   RSS MiB   fds   answers")
            while not load.done():
                elapsed = time.monotonic() - started
                row = (elapsed, status_of(pid)["VmRSS"], len(os.listdir(f"/proc/{pid}/fd")))
                samples.append(row)
                print(f"  {row[0]:6.0f} {row[1]:9.1f} {row[2]:5d}   {sum(found.answers.values()):7d}", flush=True)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(load), every)
            await load

        asyncio.run(sampled())
        time.sleep(1.5)
        idle_after = idle_fds()
        end = status_of(pid)
        log = gateway.log.read_text(errors="replace")
        log_leaks = leaks(log, gateway, fault_url)
        log_lines = log.splitlines()
        # "LEVEL - time - logger - message": counted by level, logger and message, without numbers
        kinds = Counter(re.sub(r"\d+", "#", " - ".join(line.split(" - ")[::2])[:100]) for line in log_lines)
    first, last = samples[0][1], end["VmRSS"]
    growth = (last - first) / first * 100
    answers = sum(found.answers.values())
    print(f"  answers: {answers} ({', '.join(f'{k} {v}' for k, v in sorted(found.answers.items()))})")
    print(
        f"  RSS after warm-up {first:.1f} MiB -> {last:.1f} MiB at the end: {growth:+.1f} % (goal < 5 %);"
        f" peak {end['VmHWM']:.1f} MiB"
    )
    growth = (idle_after[0] - idle_after[1]) - (idle_before[0] - idle_before[1])
    print(
        f"  open fds with no client connected: {idle_before[0]} before -> {idle_after[0]} after, of which pooled"
        f" upstream connections {idle_before[1]} -> {idle_after[1]}; growth in the others {growth:+d} (goal 0)"
    )
    print(
        f"  leak audit: {len(found.leaks)} in {answers} answers (headers and bodies),"
        f" {len(log_leaks)} in {len(log_lines)} log lines"
    )
    print("  log lines: " + "; ".join(f"{n} x {kind!r}" for kind, n in kinds.most_common(4)))
    print(f"  failures: {len(found.failures)}" + (f"; first: {found.failures[:3]}" if found.failures else ""))
    for leak in (found.leaks + log_leaks)[:5]:
        print(f"  LEAK: {leak}")
    return {
        "seconds": seconds,
        "answers": found.answers,
        "rss_series": [(round(t), round(r, 1), f) for t, r, f in samples],
        "rss_growth_pct": round(growth, 2),
        "fd_growth": growth,
        "leaks": len(found.leaks) + len(log_leaks),
        "failures": len(found.failures),
    }


# -------------------------------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    modes = parser.add_subparsers(dest="mode")
    soak_mode = modes.add_parser("soak", help="mixed traffic for a while: RSS, fds, the leak audit")
    soak_mode.add_argument("--seconds", type=float, default=600.0)
    soak_mode.add_argument("--concurrency", type=int, default=8)
    soak_mode.add_argument("--every", type=float, default=10.0, help="seconds between samples")
    soak_mode.add_argument("--warmup", type=float, default=30.0, help="seconds of load before the baseline")
    never = modes.add_parser("never-reading", help="clients that never read a 10 MiB answer")
    never.add_argument("--clients", type=int, default=50)
    never.add_argument("--hold", type=float, default=15.0, help="seconds the clients stay before leaving")
    never.add_argument("--answer-idle", type=float, default=None, help="routes.toml answer_idle_seconds")
    never.add_argument("--rounds", type=int, default=2, help="bursts of never-reading clients, one after another")
    bomb_mode = modes.add_parser("bomb", help="a gzip bomb from the upstream")
    bomb_mode.add_argument("--mb", type=int, default=2048, help="what the bomb inflates to, MiB")
    gone = modes.add_parser("disconnect", help="client hang-up -> upstream cancellation")
    gone.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    mode = args.mode or "soak"
    print(f"probe {mode}:", flush=True)
    if mode == "soak":
        if args.mode is None:
            args.seconds, args.concurrency, args.every, args.warmup = 600.0, 8, 10.0, 30.0
        result = soak(args.seconds, args.concurrency, args.every, args.warmup)
        return 1 if result["leaks"] or result["failures"] or result["fd_growth"] > 0 else 0
    if mode == "never-reading":
        never_reading(args.clients, args.hold, args.answer_idle, args.rounds)
    elif mode == "bomb":
        bomb(args.mb)
    else:
        disconnect(args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
