"""Which upstream client should the gateway use? Measure the candidates in one process against the fake.

The gateway's upstream client is `engine.transport.make_client()`: httpx's interface over our aiohttp
transport. That choice rests on a claim (httpx's own pool and pure-Python HTTP/1.1 parser cost ~1 ms per
request and cap near 1,000 RPS on this class of machine); this script keeps it checkable. Every candidate
sends the request the gateway sends (same headers, a pre-encoded JSON body, `stream=True` then a full read,
the way `engine/proxy.py` does) to the local OpenAI fake, and reports:

- latency at concurrency 1 (p50 / p99, median of round medians), and
- requests per second at concurrency 16 and 64, with the client's own CPU time per request: on 2 cores,
  client CPU is what the gateway pays per request, so it matters more than raw RPS.

The client runs pinned to one CPU and the fake to another (when there are two), so the fake is not the
limit. Candidates run interleaved, round by round, so machine drift hits them all alike.

    .venv/bin/python bench/transports.py            # ~80 s
    .venv/bin/python bench/transports.py --rounds 5 --duration 3
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # `engine` and `tests.fakes` when run from anywhere

from engine.bounded import read_decoded  # noqa: E402
from engine.transport import AiohttpTransport, make_client  # noqa: E402

BODY = b'{"model":"gpt-4.1","messages":[{"role":"user","content":"Say hello."}]}'
HEADERS = {"authorization": "Bearer sk-bench", "content-type": "application/json", "accept": "application/json"}
TIMEOUT = httpx.Timeout(600.0, connect=10.0)  # what specs/providers/openai.toml sets


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pin(cpu: int | None) -> Callable[[], None] | None:
    """A `preexec_fn` pinning the child to one CPU (what `taskset -c` does), or None when not pinning."""
    if cpu is None:
        return None
    return lambda: os.sched_setaffinity(0, {cpu})


@contextlib.contextmanager
def fake_upstream(cpu: int | None) -> Iterator[str]:
    """The OpenAI fake on a free loopback port, without its request log; yields the chat URL."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.openai_fake", "--port", str(port), "--no-record"],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=pin(cpu),
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the fake upstream exited with {process.returncode}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("the fake upstream did not start in 20 s") from None
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/v1/chat/completions"
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --------------------------------------------------------------------------------------------- subjects


async def _drain(response: httpx.Response) -> int:
    """Read the whole body and release the connection, as engine/proxy.py does; the status for counting."""
    try:
        await response.aread()
    finally:
        await response.aclose()
    return response.status_code


class Subject:
    """One client under test: `call()` sends one request and reads the whole answer; returns the status."""

    name = ""

    async def call(self) -> int:
        raise NotImplementedError

    async def aclose(self) -> None:
        pass


class HttpxClient(Subject):
    """An httpx.AsyncClient, used exactly the way engine/proxy.py uses the gateway's client."""

    def __init__(self, name: str, client: httpx.AsyncClient, url: str) -> None:
        self.name, self.client, self.url = name, client, url

    async def call(self) -> int:
        request = self.client.build_request("POST", self.url, headers=HEADERS, content=BODY, timeout=TIMEOUT)
        return await _drain(await self.client.send(request, stream=True))

    async def aclose(self) -> None:
        await self.client.aclose()


class TransportOnly(Subject):
    """The engine transport called without httpx.AsyncClient around it: prices the client layer itself."""

    name = "engine AiohttpTransport, no AsyncClient"

    def __init__(self, url: str) -> None:
        self.transport, self.url = AiohttpTransport(), url

    async def call(self) -> int:
        request = httpx.Request(
            "POST", self.url, headers=HEADERS, content=BODY, extensions={"timeout": TIMEOUT.as_dict()}
        )
        return await _drain(await self.transport.handle_async_request(request))

    async def aclose(self) -> None:
        await self.transport.aclose()


class EngineAsProxy(Subject):
    """`make_client()` exactly as engine/proxy.py drives it: the request built from pre-encoded bytes with a
    cached parsed URL (`engine.proxy._request`), the answer read from its stream by `engine.bounded`."""

    name = "engine make_client(), as engine/proxy.py uses it"

    def __init__(self, url: str) -> None:
        self.client, self.url = make_client(), httpx.URL(url)
        self.extensions = {"timeout": TIMEOUT.as_dict()}

    async def call(self) -> int:
        request = httpx.Request("POST", self.url, headers=HEADERS, stream=httpx.ByteStream(BODY))
        request.extensions = self.extensions
        request.headers.encoding = "ascii"
        request.read()
        response = await self.client.send(request, stream=True)
        try:
            await read_decoded(response, 1 << 26)
        finally:
            await response.aclose()
        return response.status_code

    async def aclose(self) -> None:
        await self.client.aclose()


class RawAiohttp(Subject):
    """aiohttp.ClientSession with no httpx at all: the floor for a Python client on this machine."""

    name = "aiohttp.ClientSession (raw)"

    def __init__(self, url: str) -> None:
        self.url = url
        self.timeout = aiohttp.ClientTimeout(total=None, sock_connect=10.0, sock_read=600.0)
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=512), auto_decompress=False, skip_auto_headers=("User-Agent",)
        )

    async def call(self) -> int:
        async with self.session.post(self.url, data=BODY, headers=HEADERS, timeout=self.timeout) as response:
            await response.read()
            return response.status

    async def aclose(self) -> None:
        await self.session.close()


class AiohttpAsTransport(RawAiohttp):
    """aiohttp called exactly as `AiohttpTransport` calls it, with no httpx object around: with the row above,
    the price of httpx's interface itself."""

    name = "aiohttp, called as AiohttpTransport calls it"

    async def call(self) -> int:
        response = await self.session.request(
            "POST", self.url, headers=list(HEADERS.items()), data=BODY, allow_redirects=False, timeout=self.timeout
        )
        try:
            read = response.content.readany
            chunks = []
            while chunk := await read():
                chunks.append(chunk)
            b"".join(chunks)
        finally:
            response.release()
        return response.status


def make_subjects(url: str) -> list[Subject]:
    """The candidates. httpx's default transport gets a pool as large as ours so that it is not penalized
    for reconnecting (its default keeps only 20 idle connections, which reconnects most requests at 64)."""
    pool = httpx.Limits(max_connections=512, max_keepalive_connections=512)
    subjects: list[Subject] = [
        HttpxClient(
            "httpx.AsyncClient, default transport (httpcore+h11)",
            httpx.AsyncClient(limits=pool, trust_env=False, follow_redirects=False),
            url,
        ),
        HttpxClient(
            "httpx.AsyncClient + engine AiohttpTransport",
            httpx.AsyncClient(transport=AiohttpTransport(), trust_env=False, follow_redirects=False),
            url,
        ),
        HttpxClient("engine make_client(): UpstreamClient + AiohttpTransport", make_client(), url),
    ]
    try:  # the third-party adapter the field notes name; not a project dependency
        from httpx_aiohttp import AiohttpTransport as ThirdParty

        subjects.append(
            HttpxClient(
                "httpx.AsyncClient + httpx_aiohttp.AiohttpTransport",
                httpx.AsyncClient(transport=ThirdParty(limits=pool), trust_env=False, follow_redirects=False),
                url,
            )
        )
    except ImportError:
        pass
    subjects += [TransportOnly(url), EngineAsProxy(url), AiohttpAsTransport(url), RawAiohttp(url)]
    return subjects


# ------------------------------------------------------------------------------------------ measurement


@dataclass
class Tally:
    round_p50: list[float] = field(default_factory=list)
    samples: list[float] = field(default_factory=list)
    rps: dict[int, list[float]] = field(default_factory=dict)
    cpu: dict[int, list[float]] = field(default_factory=dict)


async def latency_round(subject: Subject, requests: int) -> list[float]:
    times = []
    for _ in range(requests):
        started = time.perf_counter()
        status = await subject.call()
        times.append(time.perf_counter() - started)
        if status != 200:
            raise RuntimeError(f"{subject.name}: status {status}")
    return times


async def load_round(subject: Subject, concurrency: int, seconds: float) -> tuple[float, float]:
    """Requests per second and client CPU milliseconds per request, `concurrency` requests in flight."""
    done = 0
    stop_at = time.perf_counter() + min(seconds, 0.5)

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < stop_at:
            if await subject.call() != 200:
                raise RuntimeError(f"{subject.name}: non-200 answer under load")
            done += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))  # warm the pool to this size
    done, stop_at = 0, time.perf_counter() + seconds
    cpu, started = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    return done / elapsed, cpu * 1000 / max(done, 1)


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))]


async def measure(url: str, rounds: int, requests: int, seconds: float, levels: list[int]) -> None:
    subjects = make_subjects(url)
    tallies = {s.name: Tally() for s in subjects}
    try:
        for subject in subjects:  # warm-up: connections, code paths
            await latency_round(subject, 200)
        for number in range(1, rounds + 1):
            print(f"round {number}/{rounds} ...", file=sys.stderr, flush=True)
            for subject in subjects:
                times = await latency_round(subject, requests)
                tallies[subject.name].round_p50.append(statistics.median(times))
                tallies[subject.name].samples += times
            for level in levels:
                for subject in subjects:
                    rps, cpu = await load_round(subject, level, seconds)
                    tallies[subject.name].rps.setdefault(level, []).append(rps)
                    tallies[subject.name].cpu.setdefault(level, []).append(cpu)
    finally:
        for subject in subjects:
            await subject.aclose()
    report(tallies, levels)


def report(tallies: dict[str, Tally], levels: list[int]) -> None:
    width = max(len(name) for name in tallies)
    head = f"{'client':<{width}}  {'p50 ms':>7} {'p99 ms':>7}"
    for level in levels:
        head += f"  {f'RPS@{level}':>9} {f'cpu ms/req@{level}':>16}"
    print(head)
    for name, tally in tallies.items():
        line = f"{name:<{width}}  {statistics.median(tally.round_p50) * 1000:>7.3f}"
        line += f" {percentile(tally.samples, 99) * 1000:>7.3f}"
        for level in levels:
            line += f"  {statistics.median(tally.rps[level]):>9,.0f} {statistics.median(tally.cpu[level]):>16.3f}"
        print(line)
    print("(medians over rounds; cpu ms/req is this client process's CPU per request, the fake runs elsewhere)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--requests", type=int, default=500, help="sequential requests per latency round")
    parser.add_argument("--duration", type=float, default=1.5, help="seconds per load measurement")
    parser.add_argument("--concurrency", default="16,64", help="comma-separated load levels")
    parser.add_argument("--no-pin", action="store_true", help="do not pin client and fake to separate CPUs")
    args = parser.parse_args(argv)
    levels = [int(c) for c in args.concurrency.split(",")]

    cpus = sorted(os.sched_getaffinity(0))
    pinned = not args.no_pin and len(cpus) >= 2
    if pinned:
        os.sched_setaffinity(0, {cpus[0]})
    import uvloop

    print(
        f"python {sys.version.split()[0]}, httpx {httpx.__version__}, aiohttp {aiohttp.__version__}, "
        f"uvloop {uvloop.__version__}; {len(cpus)} CPUs; "
        + (f"client pinned to CPU {cpus[0]}, fake to CPU {cpus[1]}" if pinned else "not pinned")
    )
    with fake_upstream(cpus[1] if pinned else None) as url:
        uvloop.run(measure(url, args.rounds, args.requests, args.duration, levels))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
