"""Python HTTP/1.1 clients for the benchmark: a blocking one for latency and an asyncio one for load.

Why hand-rolled rather than httpx or aiohttp: on a 2-core machine the client competes with the gateway
for CPU, and at concurrency 1 its own cost lands in every sample. A client that sends pre-encoded request
bytes over a keep-alive socket and parses only the status line, `content-length` and chunked framing costs
a few microseconds per request, so what is measured is the server, not the client. `bench/run.py` uses:

- `Connection` (blocking socket): latency at concurrency 1 and time-to-first-token when streaming.
- `python bench/loadgen.py ...` in a separate process: the requests-per-second fallback when `wrk` is
  not installed (`--client raw`, asyncio streams on uvloop), or the aiohttp client for comparison
  (`--client aiohttp`). It prints one JSON object on stdout.

Only what these benchmarks need is supported: loopback, keep-alive, `content-length` or chunked bodies
(no trailers).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import statistics
import sys
import time
from dataclasses import dataclass, field

import aiohttp

_HEADER_END = b"\r\n\r\n"
_TIMEOUT = 10.0  # seconds per request; a hung server must not hang the benchmark


def encode_request(host: str, port: int, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    """One POST, fully encoded, so that the send path does no formatting per request."""
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def _parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split(" ", 2)[1]), headers


@dataclass
class Reply:
    """One response as the benchmark sees it; times are `perf_counter` seconds after the send began."""

    status: int
    headers: dict[str, str]
    body: bytes
    first_event: float | None  # when the first `data:` bytes of an event stream arrived
    total: float


@dataclass
class Connection:
    """A blocking keep-alive connection: the lowest-noise way to time one request at a time."""

    host: str
    port: int
    _sock: socket.socket | None = None
    _buffer: bytearray = field(default_factory=bytearray)

    def _connect(self) -> socket.socket:
        if self._sock is None:
            self._sock = socket.create_connection((self.host, self.port), timeout=_TIMEOUT)
            self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._buffer.clear()
        return self._sock

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _fill(self, sock: socket.socket) -> None:
        chunk = sock.recv(262144)
        if not chunk:
            raise ConnectionError("server closed the connection mid-response")
        self._buffer += chunk

    def _take_until(self, sock: socket.socket, marker: bytes) -> bytes:
        while (end := self._buffer.find(marker)) < 0:
            self._fill(sock)
        data = bytes(self._buffer[:end])
        del self._buffer[: end + len(marker)]
        return data

    def _take(self, sock: socket.socket, size: int) -> bytes:
        while len(self._buffer) < size:
            self._fill(sock)
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    def request(self, payload: bytes) -> Reply:
        """Send one encoded request and read its whole response (reconnecting if the server closed)."""
        reused = self._sock is not None
        sock = self._connect()
        started = time.perf_counter()
        try:
            sock.sendall(payload)
            head = self._take_until(sock, _HEADER_END)
        except (ConnectionError, BrokenPipeError):
            if not reused or self._buffer:
                raise
            # The server closed this idle keep-alive connection (uvicorn does after 5 s) before the request
            # reached it: what any HTTP client does is to send it again on a new connection, once.
            self.close()
            sock = self._connect()
            started = time.perf_counter()
            sock.sendall(payload)
            head = self._take_until(sock, _HEADER_END)
        status, headers = _parse_head(head)
        first_event: float | None = None
        if "content-length" in headers:
            body = self._take(sock, int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            parts: list[bytes] = []
            while True:
                size = int(self._take_until(sock, b"\r\n").split(b";")[0], 16)
                if size == 0:
                    self._take_until(sock, b"\r\n")  # no trailers are expected
                    break
                part = self._take(sock, size)
                self._take(sock, 2)
                parts.append(part)
                if first_event is None and b"data:" in part:
                    first_event = time.perf_counter() - started
            body = b"".join(parts)
        else:
            raise ValueError(f"unsupported response framing: {headers}")
        total = time.perf_counter() - started
        if headers.get("connection", "").lower() == "close":
            self.close()
        return Reply(status, headers, body, first_event, total)


def percentile(samples: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of unsorted samples."""
    ordered = sorted(samples)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


# ----------------------------------------------------------------------------------------- load (async)


@dataclass
class LoadResult:
    client: str
    concurrency: int
    seconds: float
    requests: int
    errors: int
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_ms_per_request: float  # the load generator's own CPU: shows whether it is the bottleneck

    def to_json(self) -> str:
        return json.dumps(self.__dict__)


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> None:
    """Consume one response body: `content-length` (JSON answers) or chunked (event streams, for the soak)."""
    length = headers.get("content-length")
    if length is not None:
        await reader.readexactly(int(length))
        return
    if headers.get("transfer-encoding", "").lower() != "chunked":
        raise ValueError(f"unsupported response framing: {headers}")
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
        await reader.readexactly(size + 2)  # the chunk and its CRLF; after the last (size 0), the empty line
        if size == 0:
            return


async def _raw_worker(
    host: str, port: int, payload: bytes, stop_at: float, record_from: float, latencies: list[float]
) -> int:
    """One keep-alive connection sending back-to-back; returns its count of failed requests.

    A dropped connection counts as one error and is reopened, so one failure does not end the run.
    """
    errors = 0
    while time.perf_counter() < stop_at:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while (now := time.perf_counter()) < stop_at:
                writer.write(payload)
                status, headers = _parse_head((await reader.readuntil(_HEADER_END))[:-4])
                await _read_body(reader, headers)
                if now >= record_from:
                    if status == 200:
                        latencies.append(time.perf_counter() - now)
                    else:
                        errors += 1
                if headers.get("connection", "").lower() == "close":
                    break
        except (OSError, asyncio.IncompleteReadError):
            errors += 1
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    return errors


async def _aiohttp_worker(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    headers: dict[str, str],
    stop_at: float,
    record_from: float,
    out: list[float],
) -> int:
    errors = 0
    while (now := time.perf_counter()) < stop_at:
        async with session.post(url, data=body, headers=headers) as response:
            await response.read()
            if now >= record_from:
                if response.status == 200:
                    out.append(time.perf_counter() - now)
                else:
                    errors += 1
    return errors


async def run_load(
    client: str,
    url: str,
    body: bytes,
    headers: dict[str, str],
    concurrency: int,
    duration: float,
    warmup: float,
) -> LoadResult:
    """Keep `concurrency` requests in flight for `warmup + duration` seconds; count only after warm-up."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    latencies: list[float] = []
    begin = time.perf_counter()
    record_from, stop_at = begin + warmup, begin + warmup + duration
    cpu_before = time.process_time()
    if client == "raw":
        payload = encode_request(host, port, parts.path, body, headers)
        counts = await asyncio.gather(
            *(_raw_worker(host, port, payload, stop_at, record_from, latencies) for _ in range(concurrency))
        )
    else:
        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(connector=connector) as session:
            counts = await asyncio.gather(
                *(
                    _aiohttp_worker(session, url, body, headers, stop_at, record_from, latencies)
                    for _ in range(concurrency)
                )
            )
    cpu = time.process_time() - cpu_before
    seconds = time.perf_counter() - record_from
    done = len(latencies)
    return LoadResult(
        client=client,
        concurrency=concurrency,
        seconds=round(seconds, 3),
        requests=done,
        errors=sum(counts),
        rps=done / seconds if seconds > 0 else 0.0,
        p50_ms=statistics.median(latencies) * 1000 if latencies else float("nan"),
        p99_ms=percentile(latencies, 99) * 1000 if latencies else float("nan"),
        cpu_ms_per_request=cpu * 1000 / max(1, done),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url", help="http://127.0.0.1:PORT/path (loopback only)")
    parser.add_argument("--body-file", required=True, help="request body to POST")
    parser.add_argument("--header", action="append", default=[], help="'Name: value', repeatable")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--client", choices=("raw", "aiohttp"), default="raw")
    args = parser.parse_args(argv)
    if not args.url.startswith(("http://127.0.0.1:", "http://localhost:")):
        parser.error("loopback URLs only")
    headers = {name.strip(): value.strip() for name, _, value in (h.partition(":") for h in args.header)}
    with open(args.body_file, "rb") as handle:
        body = handle.read()
    load = run_load(args.client, args.url, body, headers, args.concurrency, args.duration, args.warmup)
    try:
        import uvloop  # what the gateway runs on; also the cheaper loop for the client
    except ImportError:
        result = asyncio.run(load)
    else:
        result = uvloop.run(load)
    print(result.to_json())
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
