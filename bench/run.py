"""End-to-end benchmark of the gateway: added latency, requests per second, streaming, memory.

    .venv/bin/python bench/run.py                  # ~1 minute, prints the numbers
    .venv/bin/python bench/run.py --body small,opencode,agent   # `make bench`: all three bodies, ~5 minutes
    .venv/bin/python bench/run.py --duration 10    # longer load runs
    .venv/bin/python bench/run.py --profile 10     # also sample the gateway with py-spy under load
    .venv/bin/python bench/run.py --compare-engine /tmp/base  # A/B against another checkout, in one run
    .venv/bin/python bench/run.py --soak 120 --only-soak      # leaks and degradation under sustained load

What it does, and why this way (the method is the one in /work/shared/field-notes.md):

1. Starts the OpenAI fake (`tests.fakes.openai_fake --no-record`) and the gateway (`engine serve --workers 1`)
   on free loopback ports, with a throw-away database and gateway key, OPENAI_BASE_URL pointing at the fake.
   Every other `*_API_KEY` / `*_BASE_URL` is removed from the gateway's environment: nothing leaves the host.
2. Added latency at concurrency 1, non-streaming, ~400-byte answers: rounds to the fake directly and through
   the gateway are interleaved; each figure is the median over rounds of that round's p50 / p99, and added is
   gateway - direct. Interleaving and medians of rounds are what make the result hold on a noisy machine. The
   client is a blocking socket sending pre-encoded bytes (bench/loadgen.py): its own cost is a few
   microseconds, the same on both sides, and cancels in the difference.
3. Requests per second at concurrency 16 and 64, gateway and direct in the same run, as a ratio. The load
   generator must not be the bottleneck: `wrk` (C; ~20 µs of CPU per request) when it is on PATH, else a
   hand-rolled asyncio client in its own process (~45 µs); aiohttp's client (~110 µs) is there to compare.
   The gateway's CPU time per request is read from /proc as well: on a shared or noisy machine it is steadier
   than RPS, and 1000 / (CPU ms per request) is the most one core can serve.
4. Pinning: with 2+ CPUs the gateway gets CPU 0 to itself; the fake, the load generator and this script share
   the others (sched_setaffinity, what `taskset -c` does). The gateway then has one whole core, as one worker
   has in production, and the generator cannot steal it. `--no-pin` leaves placement to the scheduler.
5. Streaming: added time to first token (the first `data:` event) at concurrency 1, interleaved the same way.
6. Peak RSS of the gateway process (VmHWM from /proc).
7. Optional `--soak SECONDS`: concurrency 16 for that long, alternating non-streaming and streaming windows,
   sampling RSS (VmRSS), open fds and RPS between windows: RSS growing with the request count is a leak, CPU
   per request rising is degradation. Then clients hang up mid-stream a few hundred times; the gateway must
   cut its upstream streams and return to its baseline fds and upstream connections. This is what catches
   the leaks and worker recycling peers are known for (field notes, item 7).
8. Every process is stopped in `finally`; a hard `--time-limit` ends a hung run.
9. The floor (issue 13): `bench/passthrough.py`, a bare passthrough on the same stack (Litestar, uvicorn with
   uvloop/httptools, one aiohttp session), pinned like the gateway and interleaved as a third target. Each body
   of `--body` (small, OpenCode's real 33 KB request, a 600 KB 200-turn session; bench/fixtures/) gets its own
   phases, with a msgspec decode + encode of the body timed once per round as the yardstick for the gateway's
   own work. Then streams of 1,000 chunks sent back to back give the relay cost per chunk, and the run ends with
   issue 13's goal table, PASS / FAIL per row, every ratio taken between targets of the same run.

`--compare-engine DIR|CMD` starts a second gateway (another checkout's directory, or any `engine` command
line) and interleaves it with the first, so that an A/B difference is not machine drift between two runs.
Loopback only: every address is 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import glob
import http.client
import json
import os
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from loadgen import Connection, encode_request, percentile

REPO = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
PUBLIC_MODEL, UPSTREAM_MODEL = "openai/gpt-4.1", "gpt-4.1"
UPSTREAM_KEY = "sk-bench-not-a-real-key"
OVERHEAD_HEADER = "x-compose-overhead-ms"
PROMPT = [{"role": "user", "content": "Say hello."}]  # the fake answers with ~400 bytes of JSON
FIXTURES = Path(__file__).resolve().parent / "fixtures"
BODIES = {  # --body NAME; see bench/fixtures/README.md
    "small": None,  # {"model", "messages": PROMPT}: ~60 bytes
    "opencode": FIXTURES / "opencode_request.json",  # OpenCode's real first request: ~33 KB
    "agent": FIXTURES / "agent_conversation.json",  # a 200-turn OpenCode session: ~620 KB
}


class TimeLimit(Exception):
    """Raised from SIGALRM when the whole run exceeds --time-limit."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def load_body(name: str) -> dict[str, Any]:
    """`--body`: a name from BODIES or a JSON file of a chat completions request (its `model` is replaced)."""
    path = BODIES[name] if name in BODIES else Path(name)
    if path is None:
        return {"model": UPSTREAM_MODEL, "messages": PROMPT}
    doc = json.loads(path.read_text())
    if not isinstance(doc, dict) or not isinstance(doc.get("messages"), list):
        raise SystemExit(f"--body {name}: not a chat completions request (an object with `messages`)")
    return doc


def request_body(doc: dict[str, Any], model: str, stream: bool = False) -> bytes:
    """The bytes a client sends: compact JSON, UTF-8 as is (what JSON.stringify gives OpenCode's 33,431 bytes).

    Streaming sets `stream` and keeps the body's own `stream_options`; non-streaming drops both."""
    doc = {**doc, "model": model}
    if stream:
        doc["stream"] = True
    else:
        doc.pop("stream", None)
        doc.pop("stream_options", None)
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


def cpu_seconds(pid: int) -> float:
    """CPU time of every thread of a process: /proc/<pid>/task/*/sched (ns resolution), else /proc/stat ticks."""
    total, found = 0.0, False
    for path in glob.glob(f"/proc/{pid}/task/*/sched"):
        with contextlib.suppress(OSError), open(path) as sched:
            for line in sched:
                if line.startswith("se.sum_exec_runtime"):
                    total += float(line.split(":")[1]) / 1000
                    found = True
                    break
    if found:
        return total
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def memory_mib(pid: int) -> dict[str, float]:
    """VmHWM (peak resident set) and VmRSS of a process, in MiB."""
    found: dict[str, float] = {}
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in ("VmHWM", "VmRSS"):
                found[name] = round(int(value.split()[0]) / 1024, 1)
    return found


@dataclass
class Target:
    """Where requests go: the fake directly, or a gateway (same prompt, each with the model name it expects)."""

    name: str
    port: int
    path: str
    model: str
    headers: dict[str, str]
    pid: int | None = None  # a gateway's process, for CPU and memory
    body: dict[str, Any] = field(default_factory=lambda: load_body("small"))
    body_name: str = "small"

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}{self.path}"

    def body_bytes(self, stream: bool = False) -> bytes:
        return request_body(self.body, self.model, stream)

    def payload(self, stream: bool = False, body: bytes | None = None) -> bytes:
        content = self.body_bytes(stream) if body is None else body
        return encode_request(HOST, self.port, self.path, content, self.headers)


def rotated(targets: list[Target], number: int) -> list[Target]:
    """Round `number`'s order: each target takes each position equally often."""
    shift = number % len(targets)
    return targets[shift:] + targets[:shift]


# -------------------------------------------------------------------------------------------- processes


@dataclass
class Processes:
    """The child processes of one run; `stop_all` is safe at any point and bounded in time."""

    children: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(
        self, argv: list[str], env: dict[str, str], log: Path, cpus: set[int] | None, cwd: Path = REPO
    ) -> subprocess.Popen[bytes]:
        pin: Callable[[], None] | None = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
        with log.open("wb") as out:  # a file, not a pipe: a full pipe would stall the child
            process = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, preexec_fn=pin)
        self.children.append(process)
        return process

    def stop_all(self) -> None:
        for process in self.children:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)  # uvicorn and aiohttp both shut down cleanly on SIGINT
        for process in self.children:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def wait_until_listening(port: int, process: subprocess.Popen[bytes], log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {HOST}:{port} after {timeout:.0f} s:\n{log.read_text()[-3000:]}")


# ---------------------------------------------------------------------------------- concurrency 1 phases


@dataclass
class Sequential:
    """One target's results at concurrency 1: per-round p50 / p99 (seconds), its own overhead header, CPU."""

    p50: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)
    overhead_ms: list[float] = field(default_factory=list)
    cpu: float = 0.0
    requests: int = 0
    answer_bytes: int = 0

    def summary(self) -> dict[str, Any]:
        found: dict[str, Any] = {
            "p50_ms": round(statistics.median(self.p50) * 1000, 3),
            "p99_ms": round(statistics.median(self.p99) * 1000, 3),
        }
        if self.overhead_ms:
            found["own_overhead_header_p50_ms"] = round(statistics.median(self.overhead_ms), 3)
        if self.cpu:
            found["cpu_ms_per_request"] = round(self.cpu * 1000 / self.requests, 3)
        return found


def sequential_phase(
    targets: list[Target], rounds: int, requests: int, stream: bool, each_round: Callable[[], None] | None = None
) -> dict[str, Sequential]:
    """Interleaved rounds of `requests` one-at-a-time requests per target.

    Non-streaming, a sample is the whole response; streaming, it is the first `data:` event (time to first
    token), and the rest of the stream is read before the next request. `each_round` runs once per round,
    between the targets' turns (the msgspec comparator), so that it sees the same drift of the machine.
    """
    connections = {t.name: Connection(HOST, t.port) for t in targets}
    payloads = {t.name: t.payload(stream) for t in targets}
    results = {t.name: Sequential() for t in targets}
    try:
        for target in targets:  # warm-up: connections, the gateway's upstream pool, code paths
            for _ in range(min(200, requests)):
                try:
                    connections[target.name].request(payloads[target.name])
                except OSError as exc:
                    raise RuntimeError(f"{target.name}: {exc}") from exc
        for number in range(rounds):
            if each_round is not None:
                each_round()
            for target in rotated(targets, number):
                result, samples = results[target.name], []
                cpu_before = cpu_seconds(target.pid) if target.pid else 0.0
                for _ in range(requests):
                    reply = connections[target.name].request(payloads[target.name])
                    if reply.status != 200:
                        raise RuntimeError(f"{target.name} answered {reply.status}: {reply.body[:500]!r}")
                    timed = reply.first_event if stream else reply.total
                    if timed is None:
                        raise RuntimeError(f"{target.name} sent no `data:` event: {reply.body[:500]!r}")
                    samples.append(timed)
                    if OVERHEAD_HEADER in reply.headers:
                        result.overhead_ms.append(float(reply.headers[OVERHEAD_HEADER]))
                    result.answer_bytes = len(reply.body)
                if target.pid:
                    result.cpu += cpu_seconds(target.pid) - cpu_before
                result.requests += requests
                result.p50.append(statistics.median(samples))
                result.p99.append(percentile(samples, 99))
    finally:
        for connection in connections.values():
            connection.close()
    return results


PACE_S = 0.001  # the idle gap before each paced yardstick sample: about a c=1 request's turn around the gateway


def msgspec_roundtrip(
    body: bytes, hot: list[float], paced: list[float], cpus: set[int] | None, repeat: int = 30
) -> None:
    """Append the median time (s) of one `msgspec` decode + encode of `body`, the cost of merely parsing it,
    timed two ways: `hot`, back to back in this process; `paced`, on the gateway's core (`cpus`, idle between
    the targets' turns) with `PACE_S` of idle before each sample.

    Issue 13's yardstick for the gateway's own work on a big body: its overhead header must stay within a small
    multiple of this, i.e. validation, mapping and lowering must not cost more per byte than parsing does. The
    header is measured at concurrency 1, where the gateway's core idles between requests and each one starts
    cold: the same gateway's header over the opencode body read 0.108 ms back to back and 0.278 ms with 1 ms
    of idle between requests (in process), and the decode + encode alone 0.048 vs 0.139 ms. So the goal
    compares the header with the paced figure, timed as the header is; the hot one is printed beside it."""
    decode, encode, clock = msgspec.json.decode, msgspec.json.encode, time.perf_counter
    times = []
    for _ in range(repeat):
        started = clock()
        encode(decode(body))
        times.append(clock() - started)
    hot.append(statistics.median(times))
    home = os.sched_getaffinity(0)
    if cpus:
        os.sched_setaffinity(0, cpus)
    try:
        times = []
        for _ in range(repeat):
            time.sleep(PACE_S)
            started = clock()
            encode(decode(body))
            times.append(clock() - started)
    finally:
        os.sched_setaffinity(0, home)
    paced.append(statistics.median(times))


# -------------------------------------------------------------------------------------- stream relay

RELAY_CHUNKS = 1000
LOAD_MAX_BYTES = 64 * 1024  # bodies above this skip the load phase (the fake's parsing would be the bottleneck)


@dataclass
class Relay:
    """One target's long streams: per round, the median of (whole stream - first event), and its CPU."""

    after_first: list[float] = field(default_factory=list)
    first: list[float] = field(default_factory=list)
    cpu: float = 0.0
    requests: int = 0


def relay_phase(targets: list[Target], rounds: int, requests: int, fake_port: int, chunks: int) -> dict[str, Any]:
    """Per-chunk relay cost: streams of `chunks` content chunks the fake sends back to back (paced at 0 ms).

    Every request is the small streaming chat; the fake is scripted per request (`POST /_fake/script`) with
    the same long stream, usage chunk included (the gateway always asks for it). A sample is the time from the
    first `data:` event to the end of the stream, so the request's own overhead (auth, lowering, the upstream
    round trip) cancels out; the cost per chunk is (target - direct) / chunks. CPU per chunk is the server's
    CPU time over the whole block divided by the chunks relayed, request overhead included (so an upper bound).
    """
    step = scripted_stream(chunks, 0.0)
    connections = {t.name: Connection(HOST, t.port) for t in targets}
    small = load_body("small")
    payloads = {t.name: t.payload(True, request_body(small, t.model, True)) for t in targets}
    results = {t.name: Relay() for t in targets}

    def block(target: Target, count: int, result: Relay | None) -> None:
        fake_control(fake_port, "POST", "/_fake/script", [step] * count)
        cpu_before = cpu_seconds(target.pid) if target.pid else 0.0
        rest, first = [], []
        for _ in range(count):
            reply = connections[target.name].request(payloads[target.name])
            events = reply.body.count(b"data:")
            if reply.status != 200 or reply.first_event is None or events < chunks:
                raise RuntimeError(f"{target.name}: {reply.status}, {events} events: {reply.body[:300]!r}")
            rest.append(reply.total - reply.first_event)
            first.append(reply.first_event)
        if result is not None:
            result.cpu += cpu_seconds(target.pid) - cpu_before if target.pid else 0.0
            result.requests += count
            result.after_first.append(statistics.median(rest))
            result.first.append(statistics.median(first))

    try:
        for target in targets:
            block(target, 3, None)  # warm-up
        for number in range(rounds):
            for target in rotated(targets, number):
                block(target, requests, results[target.name])
    finally:
        for connection in connections.values():
            connection.close()
        with contextlib.suppress(OSError, RuntimeError):
            fake_control(fake_port, "DELETE", "/_fake/requests")
    found: dict[str, Any] = {}
    direct = statistics.median(results["direct"].after_first)
    for name, result in results.items():
        rest = statistics.median(result.after_first)
        row: dict[str, Any] = {"stream_after_first_event_ms": round(rest * 1000, 3)}
        if name != "direct":
            row["relay_us_per_chunk"] = round((rest - direct) / chunks * 1e6, 2)
        if result.cpu:
            row["cpu_us_per_chunk"] = round(result.cpu / result.requests / chunks * 1e6, 2)
        found[name] = row
    return found


# ------------------------------------------------------------------------------------------- load phase

WRK_SCRIPT = """
wrk.method = "POST"
local file = io.open("{body_file}", "rb")
wrk.body = file:read("*a")
file:close()
{headers}
local threads = {{}}
function setup(thread) table.insert(threads, thread) end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRK_JSON {{"requests":%d,"duration_us":%d,"errors":%d,"p50_us":%d,"p99_us":%d}}\\n',
    summary.requests, summary.duration, e.status + e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


@dataclass
class Load:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int
    cpu_ms_per_request: float | None = None  # of the gateway, when the target is one


class LoadGenerator:
    """Keeps N requests in flight for a while: `wrk`, or bench/loadgen.py in a process of its own."""

    def __init__(self, kind: str, workdir: Path) -> None:
        self.kind, self.workdir = kind, workdir

    def describe(self) -> str:
        if self.kind == "wrk":
            version = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split(" Copyright")[0]
            return f"wrk ({version.strip()}), 1 thread, Lua script for the POST body and headers"
        client = "raw" if self.kind == "python" else "aiohttp"
        return f"Python: bench/loadgen.py --client {client} in its own process (wrk not used)"

    def run(self, target: Target, concurrency: int, seconds: float, stream: bool = False) -> Load:
        """One run; `stream` asks for SSE answers, read to their end (the soak alternates both kinds)."""
        cpu_before = cpu_seconds(target.pid) if target.pid else 0.0
        load = (
            self._wrk(target, concurrency, seconds, stream)
            if self.kind == "wrk"
            else self._python(target, concurrency, seconds, stream)
        )
        if target.pid and load.requests:
            load.cpu_ms_per_request = (cpu_seconds(target.pid) - cpu_before) * 1000 / load.requests
        return load

    def _wrk(self, target: Target, concurrency: int, seconds: float, stream: bool) -> Load:
        script = self.workdir / f"{target.name}-{target.body_name}{'-stream' if stream else ''}.lua"
        if not script.exists():
            headers = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in target.headers.items())
            body_file = script.with_suffix(".json")
            body_file.write_bytes(target.body_bytes(stream))
            script.write_text(WRK_SCRIPT.format(body_file=body_file, headers=headers))
        argv = ["wrk", "-t1", f"-c{concurrency}", f"-d{seconds:g}s", "--timeout", "10s", "-s", str(script), target.url]
        out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30)
        line = next((x for x in out.stdout.splitlines() if x.startswith("WRK_JSON ")), None)
        if line is None:
            raise RuntimeError(f"wrk printed no result:\n{out.stdout}\n{out.stderr}")
        found = json.loads(line.removeprefix("WRK_JSON "))
        return Load(
            rps=found["requests"] / (found["duration_us"] / 1e6),
            p50_ms=found["p50_us"] / 1000,
            p99_ms=found["p99_us"] / 1000,
            errors=found["errors"],
            requests=found["requests"],
        )

    def _python(self, target: Target, concurrency: int, seconds: float, stream: bool) -> Load:
        body_file = self.workdir / f"{target.name}-{target.body_name}{'-stream' if stream else ''}.json"
        body_file.write_bytes(target.body_bytes(stream))
        argv = [sys.executable, str(Path(__file__).with_name("loadgen.py")), target.url, "--body-file", str(body_file)]
        argv += [f"--header={k}: {v}" for k, v in target.headers.items()]
        argv += ["--concurrency", str(concurrency), "--duration", str(seconds), "--warmup", "0"]
        argv += ["--client", "raw" if self.kind == "python" else "aiohttp"]
        out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30)
        if out.returncode != 0:
            raise RuntimeError(f"bench/loadgen.py failed:\n{out.stderr}")
        found = json.loads(out.stdout.strip().splitlines()[-1])
        return Load(found["rps"], found["p50_ms"], found["p99_ms"], found["errors"], found["requests"])


def load_phase(
    targets: list[Target], loadgen: LoadGenerator, level: int, rounds: int, seconds: float, warmup: float
) -> dict[str, list[Load]]:
    runs: dict[str, list[Load]] = {t.name: [] for t in targets}
    for number in range(rounds):
        for target in rotated(targets, number):
            if warmup > 0:  # new connections, and the gateway's upstream pool grows to this level
                loadgen.run(target, level, warmup)
            runs[target.name].append(loadgen.run(target, level, seconds))
    return runs


# ---------------------------------------------------------------------------------------------- profile


def _package(frame: str) -> str:
    """Whose code a py-spy frame runs: `engine`, a distribution (`litestar`, `aiohttp`, ...) or a stdlib module.

    py-spy prints paths relative to sys.path (`uvicorn/protocols/http/httptools_impl.py:524`)."""
    where = frame.rpartition("(")[2].rstrip(")")
    return where.split("/")[0].split(":")[0].removesuffix(".py")


def profile_gateway(
    target: Target, seconds: float, loadgen: LoadGenerator, out: Path, stream: bool = False
) -> list[str]:
    """Sample a server with py-spy while it serves concurrency 16 (streamed answers with `stream`); returns
    the lines of a hotspot table.

    py-spy is not a project dependency (`.venv/bin/pip install py-spy`). Self time by package says whose code
    burns the CPU (uvicorn, litestar, httpx, aiohttp, pydantic, engine, ...); multiplied by the CPU per request
    of the same load run, it is milliseconds per request, comparable between the gateway and the floor. Self
    time by line names the hottest lines; inclusive time of engine/ functions says which engine step leads there.
    The raw samples stay in `out` (py-spy's `raw` format, one stack per line) for further digging.
    """
    spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if spy is None or target.pid is None:
        return ["py-spy not found; install it into the venv (not into pyproject) to profile"]
    argv = [spy, "record", "-p", str(target.pid), "-d", f"{seconds:g}", "-r", "200", "-f", "raw", "-o", str(out)]
    with subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as spy_process:
        time.sleep(0.5)
        load = loadgen.run(target, 16, seconds + 1, stream)
        _, stderr = spy_process.communicate(timeout=seconds + 30)
    if not out.exists():
        return [f"py-spy failed: {stderr.decode(errors='replace').strip()[-500:]}"]
    own: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = background = 0
    for line in out.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = [f for f in stack.split(";") if f]
        if not frames or not count.isdigit():
            continue
        if "threading.py" in frames[0]:  # e.g. the logging queue thread; py-spy counts its lock waits as busy
            background += int(count)
            continue
        total += int(count)
        own[frames[-1]] += int(count)
        packages[_package(frames[-1])] += int(count)
        for function in {f.rpartition(":")[0] for f in frames if "(engine/" in f and "cli.py" not in f}:
            inclusive[function + ")"] += int(count)
    if not total:
        return ["py-spy recorded no samples of the main thread"]
    cpu = load.cpu_ms_per_request or 0.0
    lines = [
        f"{total} samples of the event-loop thread ({background} of other threads left out);"
        f" {load.rps:,.0f} RPS, CPU {cpu:.3f} ms/request meanwhile. Self time by package:"
    ]
    lines += [
        f"  {100 * n / total:5.1f}%  {cpu * n / total * 1000:6.0f} µs/req  {name}"
        for name, n in packages.most_common(12)
    ]
    lines += ["self time by line:"]
    lines += [f"  {100 * n / total:5.1f}%  {frame}" for frame, n in own.most_common(15)]
    lines += ["inclusive time of engine/ functions:"]
    lines += [f"  {100 * n / total:5.1f}%  {frame}" for frame, n in inclusive.most_common(20)]
    return lines


# ------------------------------------------------------------------------------------------------- soak

SOAK_CONCURRENCY = 16
LEAK_MIB_PER_100K = 20.0  # RSS growth above this, per 100k requests, is reported as a suspected leak
CPU_DRIFT = 0.25  # CPU per request rising more than this (first to last window of a kind): suspected degradation
DISCONNECT_ROUNDS, DISCONNECTS_PER_ROUND, DISCONNECTS_AT_ONCE = 3, 200, 16
SLOW_EVENTS, SLOW_EVENT_DELAY = 200, 0.05  # a scripted stream lasts 10 s unless the gateway hangs up on it
FD_SLACK = 2  # fds above the baseline still counted as "back down" (e.g. a pool connection opened meanwhile)
LEAK_KIB_PER_DISCONNECT = 4.0  # RSS growth per disconnect, after the first round, reported as a suspected leak


def open_fds(pid: int) -> int:
    """The process's open file descriptors: listening and client sockets, upstream connections, the database."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def upstream_connections(pid: int, port: int) -> int:
    """TCP sockets held by `pid` whose remote port is `port`: the gateway's connections to the fake.

    The fd count alone cannot say which side a socket faces; this joins the socket inodes in /proc/<pid>/fd
    with /proc/net/tcp{,6}. A connection the gateway forgot to close stays here (e.g. in CLOSE_WAIT).
    """
    inodes: set[str] = set()
    with os.scandir(f"/proc/{pid}/fd") as entries:
        for entry in entries:
            with contextlib.suppress(OSError):
                link = os.readlink(entry.path)
                if link.startswith("socket:["):
                    inodes.add(link[len("socket:[") : -1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as rows:
            next(rows)  # the column names
            for row in rows:
                columns = row.split()
                if int(columns[2].rpartition(":")[2], 16) == port and columns[9] in inodes:
                    count += 1
    return count


def rss_mib(pid: int) -> float:
    return memory_mib(pid).get("VmRSS", float("nan"))


@dataclass
class SoakSample:
    """The gateway's state after one load window (or, for the first, after the warm-up)."""

    elapsed: float  # seconds since the soak's clock started
    kind: str  # "json", "stream", or "start" for the baseline
    rss_mib: float
    fds: int
    upstream: int  # open connections to the fake
    requests: int = 0
    rps: float = 0.0
    errors: int = 0
    cpu_ms_per_request: float | None = None


def percent(before: float, after: float) -> float:
    return (after - before) / before * 100 if before else float("nan")


def soak_phase(target: Target, loadgen: LoadGenerator, seconds: float, window: float, fake_port: int) -> dict[str, Any]:
    """Sustained concurrency 16 for `seconds`, alternating non-streaming and streaming windows of ~`window` s.

    Consecutive load-generator runs rather than one long run: each run ends with a figure for its window, and
    the gateway is sampled between runs, so RSS, fds and RPS line up. A leak shows as RSS growing with the
    request count; degradation as RPS falling and CPU per request rising between windows of the same kind.
    Python's allocator rarely returns memory to the OS, so the baseline is taken after a warm-up of each kind.
    """
    pid = target.pid
    assert pid is not None
    warmup = min(window, 5.0)
    for stream in (False, True):
        loadgen.run(target, SOAK_CONCURRENCY, warmup, stream)
    count = max(2, round(seconds / window))
    length = seconds / count

    def sample(elapsed: float, kind: str, load: Load | None = None) -> SoakSample:
        time.sleep(0.2)  # let the gateway close the generator's connections: fds then count what it keeps
        found = SoakSample(elapsed, kind, rss_mib(pid), open_fds(pid), upstream_connections(pid, fake_port))
        if load is not None:
            found.requests, found.rps, found.errors = load.requests, load.rps, load.errors
            found.cpu_ms_per_request = load.cpu_ms_per_request
        line = f"  {found.elapsed:5.0f} s  {kind:<7} {found.rss_mib:7.1f} {found.fds:5d} {found.upstream:8d}"
        if load is not None:
            cpu = f"{found.cpu_ms_per_request:.3f}" if found.cpu_ms_per_request is not None else "?"
            line += f" {found.requests:9,d} {found.rps:8,.0f} {cpu:>10} {found.errors:6d}"
        print(line, flush=True)
        return found

    print(f"  warm-up: {warmup:g} s non-streaming + {warmup:g} s streaming, not counted")
    print("  elapsed  kind    RSS MiB   fds upstream  requests      RPS CPU ms/req errors")
    started = time.monotonic()
    samples = [sample(0.0, "start")]
    for number in range(count):
        stream = number % 2 == 1
        load = loadgen.run(target, SOAK_CONCURRENCY, length, stream)
        samples.append(sample(time.monotonic() - started, "stream" if stream else "json", load))
    return summarize_soak(samples, memory_mib(pid).get("VmHWM"))


def summarize_soak(samples: list[SoakSample], peak: float | None) -> dict[str, Any]:
    """Print and return the soak's verdict: RSS growth per 100k requests, and drift per kind of request."""
    first, last, windows = samples[0], samples[-1], samples[1:]
    requests = sum(s.requests for s in windows)
    growth = last.rss_mib - first.rss_mib
    per_100k = growth / requests * 100_000 if requests else float("nan")
    done = [0]
    for s in windows:
        done.append(done[-1] + s.requests)
    # A second opinion on first-vs-last: the least-squares slope over every sample is less sensitive to where
    # the allocator happened to be at the two ends.
    trend = statistics.linear_regression(done, [s.rss_mib for s in samples]).slope * 100_000 if requests else 0.0
    leak = per_100k > LEAK_MIB_PER_100K
    print(
        f"  RSS {first.rss_mib:.1f} MiB after warm-up -> {last.rss_mib:.1f} MiB at the end: {growth:+.1f} MiB over"
        f" {requests:,} requests = {per_100k:+.2f} MiB per 100k (threshold {LEAK_MIB_PER_100K:g}):"
        f" {'SUSPECTED LEAK' if leak else 'no leak suspected'}"
    )
    print(f"  RSS trend (least squares over all samples): {trend:+.2f} MiB per 100k requests; peak RSS {peak} MiB")
    found: dict[str, Any] = {
        "samples": [s.__dict__ for s in samples],
        "requests": requests,
        "errors": sum(s.errors for s in windows),
        "rss_first_mib": first.rss_mib,
        "rss_last_mib": last.rss_mib,
        "rss_growth_mib": round(growth, 1),
        "rss_mib_per_100k_requests": round(per_100k, 3),
        "rss_trend_mib_per_100k_requests": round(trend, 3),
        "peak_rss_mib": peak,
        "suspected_leak": leak,
        "drift": {},
    }
    degraded = False
    for kind in ("json", "stream"):
        same = [s for s in windows if s.kind == kind]
        if len(same) < 2:
            continue
        a, b = same[0], same[-1]
        drift: dict[str, Any] = {"rps_first": round(a.rps, 1), "rps_last": round(b.rps, 1)}
        drift["rps_pct"] = round(percent(a.rps, b.rps), 1)
        line = f"  {kind:<6} first -> last window: RPS {a.rps:,.0f} -> {b.rps:,.0f} ({drift['rps_pct']:+.1f} %)"
        if a.cpu_ms_per_request and b.cpu_ms_per_request:
            drift["cpu_pct"] = round(percent(a.cpu_ms_per_request, b.cpu_ms_per_request), 1)
            degraded |= drift["cpu_pct"] > CPU_DRIFT * 100
            line += (
                f", CPU {a.cpu_ms_per_request:.3f} -> {b.cpu_ms_per_request:.3f} ms/request ({drift['cpu_pct']:+.1f} %)"
            )
        found["drift"][kind] = drift
        print(line)
    found["suspected_degradation"] = degraded
    if degraded:
        print(f"  SUSPECTED DEGRADATION: CPU per request rose more than {CPU_DRIFT:.0%} over the soak")
    if found["errors"]:
        print(f"  ERRORS: {found['errors']} over the soak")
    return found


def fake_control(port: int, method: str, path: str, doc: Any = None) -> Any:
    """Call the fake's control API (`/_fake/...`; see tests/fakes/openai_fake.py)."""
    connection = http.client.HTTPConnection(HOST, port, timeout=30)
    try:
        body = json.dumps(doc).encode() if doc is not None else None
        connection.request(method, path, body=body, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError(f"fake {method} {path} answered {response.status}: {data[:300]!r}")
        return json.loads(data)
    finally:
        connection.close()


def aborted_streams(port: int) -> int:
    """Streams the fake saw closed by the gateway before their end (its `aborted` counter)."""
    return int(fake_control(port, "GET", "/_fake/stats")["aborted"])


def scripted_stream(count: int, delay: float) -> dict[str, Any]:
    """A script step for the fake: a chat stream of `count` one-word content chunks, `delay` seconds apart."""

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return {"id": "chatcmpl-soak", "object": "chat.completion.chunk", "created": 0, "model": UPSTREAM_MODEL,
                "choices": [choice]}  # fmt: skip

    events: list[Any] = [chunk({"role": "assistant", "content": ""})]
    events += [chunk({"content": "word "}) for _ in range(count)]
    usage = {"prompt_tokens": 9, "completion_tokens": count, "total_tokens": 9 + count}
    events += [chunk({}, "stop"), {**chunk({}), "choices": [], "usage": usage}, "[DONE]"]
    return {"sse": events, "event_delay": delay}


async def _hang_up_after_first_event(port: int, payload: bytes) -> bool:
    """Send a streaming request, read until the first `data:` event, then close: a client giving up mid-answer.

    An ordinary close (FIN), as an SDK or a browser does when the user cancels. True when a 200 and an event came.
    """
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(payload)
        received = b""
        while b"data:" not in received:
            chunk = await reader.read(65536)
            if not chunk:
                return False
            received += chunk
        return received.startswith(b"HTTP/1.1 200")
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def _disconnect_round(port: int, payload: bytes, pid: int, fake_port: int) -> tuple[int, int, int]:
    """DISCONNECTS_PER_ROUND clients, DISCONNECTS_AT_ONCE at a time, while the gateway's fds are watched.

    Returns how many clients saw a first event, and the most fds and upstream connections the gateway held
    meanwhile: the peak shows what the probe would see if the gateway kept streams it no longer relays.
    """
    limit = asyncio.Semaphore(DISCONNECTS_AT_ONCE)
    peak = [0, 0]

    async def one() -> bool:
        async with limit:
            return await asyncio.wait_for(_hang_up_after_first_event(port, payload), timeout=10)

    async def watch() -> None:
        while True:
            peak[0] = max(peak[0], open_fds(pid))
            peak[1] = max(peak[1], upstream_connections(pid, fake_port))
            await asyncio.sleep(0.02)

    watcher = asyncio.create_task(watch())
    try:
        done = await asyncio.gather(*(one() for _ in range(DISCONNECTS_PER_ROUND)), return_exceptions=True)
    finally:
        watcher.cancel()
    return sum(result is True for result in done), peak[0], peak[1]


def disconnect_phase(target: Target, fake_port: int) -> dict[str, Any]:
    """Clients hanging up mid-stream must not leave the gateway holding the upstream stream or its memory.

    Each request gets a slow stream from the fake (10 s if read to the end), and the client closes after the
    first event. A gateway that notices hangs up on the fake at once: its fds and upstream connections return to
    the baseline within a second or so, and the fake counts the stream as aborted. One that does not would keep
    up to DISCONNECTS_PER_ROUND upstream connections for ~10 s. The first round may grow RSS as new code paths
    allocate; growth that repeats in later rounds is what a leak looks like.
    """
    pid = target.pid
    assert pid is not None
    payload = target.payload(stream=True)
    time.sleep(1.0)  # the soak's last connections close
    before = {"rss_mib": rss_mib(pid), "fds": open_fds(pid), "upstream": upstream_connections(pid, fake_port)}
    aborted_before = aborted_streams(fake_port)
    print(f"  before:  RSS {before['rss_mib']:.1f} MiB, {before['fds']} fds, {before['upstream']} upstream connections")
    rounds: list[dict[str, Any]] = []
    try:
        for number in range(1, DISCONNECT_ROUNDS + 1):
            fake_control(
                fake_port,
                "POST",
                "/_fake/script",
                [scripted_stream(SLOW_EVENTS, SLOW_EVENT_DELAY)] * DISCONNECTS_PER_ROUND,
            )
            aborted = aborted_streams(fake_port)
            began = time.monotonic()
            answered, peak_fds, peak_upstream = asyncio.run(_disconnect_round(target.port, payload, pid, fake_port))
            spent = time.monotonic() - began
            settled = time.monotonic()
            # Give the gateway a moment (the fake notices a hang-up at its next write, <= 50 ms later), then read
            # where it settled; a gateway that holds the upstream streams does not settle within 5 s.
            while True:
                fds, upstream = open_fds(pid), upstream_connections(pid, fake_port)
                cut = aborted_streams(fake_port) - aborted
                back = fds <= before["fds"] + FD_SLACK and upstream <= before["upstream"]
                if (back and cut >= answered) or time.monotonic() - settled > 5.0:
                    break
                time.sleep(0.1)
            row = {
                "answered": answered,
                "seconds": round(spent, 2),
                "fds_peak": peak_fds,
                "upstream_peak": peak_upstream,
                "settle_seconds": round(time.monotonic() - settled, 1),
                "fds": fds,
                "upstream": upstream,
                "rss_mib": rss_mib(pid),
                "aborted_upstream": cut,
            }
            rounds.append(row)
            print(
                f"  round {number}: {answered}/{DISCONNECTS_PER_ROUND} got a first event in {spent:.1f} s;"
                f" at most {peak_fds} fds, {peak_upstream} upstream meanwhile; {row['settle_seconds']:.1f} s later:"
                f" {fds} fds, {upstream} upstream, RSS {row['rss_mib']:.1f} MiB; the fake saw {cut} streams cut"
            )
    finally:
        with contextlib.suppress(OSError, RuntimeError):  # must not hide why the phase ended
            fake_control(fake_port, "DELETE", "/_fake/requests")  # drops scripts no request consumed
    total = DISCONNECT_ROUNDS * DISCONNECTS_PER_ROUND
    last = rounds[-1]
    aborted_total = aborted_streams(fake_port) - aborted_before
    later = (last["rss_mib"] - rounds[0]["rss_mib"]) * 1024 / (total - DISCONNECTS_PER_ROUND)
    fds_back = last["fds"] <= before["fds"] + FD_SLACK and last["upstream"] <= before["upstream"]
    leak = later > LEAK_KIB_PER_DISCONNECT
    print(
        f"  after {total} disconnects: fds {before['fds']} -> {last['fds']}, upstream connections"
        f" {before['upstream']} -> {last['upstream']} ({'back down' if fds_back else 'NOT BACK DOWN'});"
        f" {aborted_total}/{total} upstream streams aborted by the gateway"
    )
    print(
        f"  RSS {before['rss_mib']:.1f} -> {last['rss_mib']:.1f} MiB; after round 1 {later:+.2f} KiB per disconnect"
        f" (threshold {LEAK_KIB_PER_DISCONNECT:g}): {'SUSPECTED LEAK' if leak else 'no leak suspected'}"
    )
    return {
        "before": before,
        "rounds": rounds,
        "disconnects": total,
        "aborted_upstream": aborted_total,
        "fds_back_down": fds_back,
        "rss_kib_per_disconnect_after_round_1": round(later, 3),
        "suspected_leak": leak,
    }


# ------------------------------------------------------------------------------------------------- main


def choose_loadgen(requested: str) -> str:
    if requested == "auto":
        return "wrk" if shutil.which("wrk") else "python"
    if requested == "wrk" and not shutil.which("wrk"):
        raise SystemExit("--loadgen wrk: wrk is not on PATH (apt-get install wrk)")
    return requested


def checkout(root: Path) -> str:
    """The commit measured, so that a figure can be traced to code (`+dirty` when engine/ or specs/ have edits)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "engine", "specs"], cwd=root, capture_output=True, text=True
        )
    except OSError:
        return "unknown (no git)"
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "") if head.returncode == 0 else "unknown"


@dataclass
class Engine:
    """How to start one gateway: a command line, the directory it runs in and the specs it serves."""

    argv: list[str]
    cwd: Path
    specs: Path
    label: str


def engine_from(option: str | None) -> Engine:
    """`--engine` / `--compare-engine`: nothing (this checkout), another checkout's directory, or a command.

    A directory runs this interpreter's `-m engine.cli` inside it, with its own specs: the working directory
    comes first on sys.path, ahead of the editable install, so that checkout's `engine` package is the one
    imported (e.g. `git worktree add /tmp/base HEAD~1`, then `--compare-engine /tmp/base`).
    """
    module = [sys.executable, "-m", "engine.cli"]
    if option is None:
        return Engine(module, REPO, REPO / "specs", f"this checkout ({checkout(REPO)})")
    path = Path(option).expanduser()
    if path.is_dir():
        root = path.resolve()
        return Engine(module, root, root / "specs", f"checkout {root} ({checkout(root)})")
    return Engine(shlex.split(option), REPO, REPO / "specs", f"command {option!r}")


def print_sequential(results: dict[str, Sequential], direct: str, servers: list[str]) -> dict[str, Any]:
    found = {name: result.summary() for name, result in results.items()}
    for name in [direct, *servers]:
        row = found[name]
        extra = f"   CPU {row['cpu_ms_per_request']:.3f} ms/request" if "cpu_ms_per_request" in row else ""
        print(f"  {name:<10} p50 {row['p50_ms']:7.3f} ms   p99 {row['p99_ms']:7.3f} ms{extra}")
    for name in servers:
        add = {
            "p50_ms": round(found[name]["p50_ms"] - found[direct]["p50_ms"], 3),
            "p99_ms": round(found[name]["p99_ms"] - found[direct]["p99_ms"], 3),
        }
        found[name]["added"] = add
        print(f"  added by {name}: p50 {add['p50_ms']:.3f} ms   p99 {add['p99_ms']:.3f} ms")
    return found


def reset_peak_rss(pid: int) -> bool:
    """Restart VmHWM from the current RSS (`5` to /proc/<pid>/clear_refs), so each body gets its own peak."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def scaled(requests: int, body_bytes: int) -> int:
    """Requests per round for a body: as given up to 64 KB, then fewer in proportion (at least 20)."""
    return requests if body_bytes <= 65536 else max(20, requests * 65536 // body_bytes)


def standard_phases(
    args: argparse.Namespace,
    targets: list[Target],
    loadgen: LoadGenerator,
    results: dict[str, Any],
    gateway_cpus: set[int] | None,
) -> None:
    """Phases 1-4 for the targets' current body: latency (with the msgspec comparator), time to first token,
    requests per second, memory (skipped by --only-soak)."""
    servers = [t.name for t in targets[1:]]
    body = targets[0].body_bytes()
    peak_reset = all(reset_peak_rss(t.pid) for t in targets[1:] if t.pid)
    # A 600 KB body takes ~100x as long per request as a small one; fewer requests keep each body's run short.
    requests, stream_requests = (scaled(n, len(body)) for n in (args.requests, args.stream_requests))
    print(f"\n[1] latency at concurrency 1, non-streaming: {args.rounds} interleaved rounds x {requests} requests")
    hot: list[float] = []
    paced: list[float] = []
    plain = sequential_phase(
        targets,
        args.rounds,
        requests,
        stream=False,
        each_round=lambda: msgspec_roundtrip(body, hot, paced, gateway_cpus),
    )
    print("  answer sizes: " + ", ".join(f"{n} {r.answer_bytes} B" for n, r in plain.items()))
    results["latency_c1"] = print_sequential(plain, "direct", servers)
    results["msgspec_roundtrip_ms"] = round(statistics.median(paced) * 1000, 4)
    results["msgspec_roundtrip_hot_ms"] = round(statistics.median(hot) * 1000, 4)
    where = "the gateway's core" if gateway_cpus else "this process"
    print(
        f"  one msgspec decode + encode of the {len(body):,}-byte body: {results['msgspec_roundtrip_ms']:.4f} ms"
        f" paced ({where}, {PACE_S * 1000:g} ms idle before each, as the gateway's requests at c=1),"
        f" {results['msgspec_roundtrip_hot_ms']:.4f} ms back to back"
    )
    for name in servers:
        header = results["latency_c1"][name].get("own_overhead_header_p50_ms")
        if header is not None:
            print(f"  {name}'s own {OVERHEAD_HEADER} header: p50 {header:.3f} ms (excludes the HTTP server, the")
            print("    framework around the handler and the upstream client's CPU, which it counts as upstream wait)")

    print(f"\n[2] streaming, time to first token at concurrency 1: {args.rounds} rounds x {stream_requests}")
    results["ttft_c1"] = print_sequential(
        sequential_phase(targets, args.rounds, stream_requests, stream=True), "direct", servers
    )

    throughput: dict[str, Any] = {}
    results["throughput"] = throughput
    levels = [int(c) for c in args.concurrency.split(",")]
    if len(body) > LOAD_MAX_BYTES:
        levels = []
        print(
            f"\n[3] requests per second: skipped for a body over {LOAD_MAX_BYTES // 1024} KiB. The fake parses every"
            " body with the json module (~10 ms for 600 KB) on the CPU it shares with the load generator, so under"
            " load it, not the target, would be measured."
        )
    else:
        print(
            f"\n[3] requests per second: {args.load_rounds} round(s) of {args.duration:g} s runs,"
            f" each after {args.warmup:g} s of warm-up"
        )
    for level in levels:
        runs = load_phase(targets, loadgen, level, args.load_rounds, args.duration, args.warmup)
        row: dict[str, Any] = {}
        for name, loads in runs.items():
            row[name] = {
                "rps": round(statistics.median(x.rps for x in loads), 1),
                "p50_ms": round(statistics.median(x.p50_ms for x in loads), 3),
                "p99_ms": round(statistics.median(x.p99_ms for x in loads), 3),
                "errors": sum(x.errors for x in loads),
            }
            cpu = [x.cpu_ms_per_request for x in loads if x.cpu_ms_per_request is not None]
            if cpu:
                row[name]["cpu_ms_per_request"] = round(statistics.median(cpu), 3)
        print(f"  c={level:<3} direct {row['direct']['rps']:>8,.0f} RPS")
        for name in servers:
            row[name]["ratio_to_direct"] = round(row[name]["rps"] / max(row["direct"]["rps"], 1e-9), 3)
            g = row[name]
            print(
                f"        {name:<10} {g['rps']:>6,.0f} RPS (ratio {g['ratio_to_direct']:.3f}, p50 {g['p50_ms']:.1f} ms,"
                f" p99 {g['p99_ms']:.1f} ms, CPU {g.get('cpu_ms_per_request', float('nan')):.3f} ms/req)"
                + (f"  ERRORS {g['errors']}" if g["errors"] else "")
            )
        throughput[str(level)] = row

    since = "this body's phases" if peak_reset else "its start"
    load = f", which ended with the c={levels[-1]} load" if levels else " (concurrency 1 only)"
    print(f"\n[4] memory (from /proc): peak RSS since {since}{load}")
    results["memory_mib"] = {}
    for target in targets[1:]:
        assert target.pid is not None
        memory = results["memory_mib"][target.name] = memory_mib(target.pid)
        print(f"  {target.name}: peak RSS {memory.get('VmHWM', '?')} MiB, now {memory.get('VmRSS', '?')} MiB")


# Issue 13's goals: (bodies, label, figure, <= or >=, limit). Ratios are gateway / floor, in the same run.
GOALS: list[tuple[tuple[str, ...], str, str, str, float]] = [
    (("small",), "CPU per request at c=16 / floor's", "cpu16", "<=", 1.3),
    (("small",), "added p50 at c=1 / floor's", "added_p50", "<=", 1.3),
    (("small",), "RPS at c=16 / floor's", "rps16", ">=", 0.75),
    (("small",), "added time to first token / floor's", "added_ttft", "<=", 1.3),
    (("opencode", "agent"), "overhead header / paced msgspec roundtrip", "header_vs_msgspec", "<=", 3.0),
    (("opencode",), "added p50 at c=1 / floor's", "added_p50", "<=", 1.5),
    (("opencode",), "RPS at c=16 / floor's", "rps16", ">=", 0.6),
    (("opencode",), "CPU per request at c=16 / floor's", "cpu16", "<=", 1.6),
    (("stream",), f"relay cost per chunk, µs ({RELAY_CHUNKS} at 0 ms)", "relay", "<=", 20.0),
    (("small", "opencode"), "peak RSS MiB (c=64 load included)", "peak_rss", "<=", 90.0),
]


def goal_figure(results: dict[str, Any], body: str, gateway: str, floor: str, kind: str) -> float | None:
    """One figure of the goal table, or None when the run did not measure it."""

    def get(*path: str) -> Any:
        found: Any = results["relay"] if body == "stream" else results["bodies"][body]
        for key in path:
            if not isinstance(found, dict) or key not in found:
                return None
            found = found[key]
        return found

    def ratio(*path: str) -> float | None:
        a, b = get(*path[:-1], gateway, path[-1]), get(*path[:-1], floor, path[-1])
        return a / b if a is not None and b else None

    if kind == "cpu16":
        return ratio("throughput", "16", "cpu_ms_per_request")
    if kind == "rps16":
        return ratio("throughput", "16", "rps")
    if kind in ("added_p50", "added_ttft"):
        a, b = (get("latency_c1" if kind == "added_p50" else "ttft_c1", t, "added", "p50_ms") for t in (gateway, floor))
        return a / b if a is not None and b else None
    if kind == "header_vs_msgspec":
        header, parse = get("latency_c1", gateway, "own_overhead_header_p50_ms"), get("msgspec_roundtrip_ms")
        return header / parse if header is not None and parse else None
    found = get("memory_mib", gateway, "VmHWM") if kind == "peak_rss" else get(gateway, "relay_us_per_chunk")
    return float(found) if found is not None else None


def goal_table(results: dict[str, Any], gateways: list[str], floor: str) -> list[dict[str, Any]]:
    """Print issue 13's goals with PASS / FAIL for each gateway; goals of bodies not measured are left out."""
    rows: list[dict[str, Any]] = []
    measured = {*results["bodies"], *(["stream"] if "relay" in results else [])}
    for gateway in gateways:
        print(f"\ngoals (issue 13) for {gateway}; ratios are to the bare passthrough ({floor}) in the same run:")
        print(f"  {'body':<9} {'goal':<42} {'measured':>9}  {'limit':<9} verdict")
        for bodies, label, kind, op, limit in GOALS:
            for body in (b for b in bodies if b in measured):
                value = goal_figure(results, body, gateway, floor, kind)
                verdict = None if value is None else (value <= limit if op == "<=" else value >= limit)
                word = "n/a" if verdict is None else "PASS" if verdict else "FAIL"
                shown = "n/a" if value is None else f"{value:.2f}"
                print(f"  {body:<9} {label:<42} {shown:>9}  {op} {limit:<6g} {word}")
                rows.append({"gateway": gateway, "body": body, "goal": label, "value": value, "pass": verdict})
    return rows


def run(args: argparse.Namespace, workdir: Path, procs: Processes) -> dict[str, Any]:
    cpus = sorted(os.sched_getaffinity(0))
    pinned = not args.no_pin and len(cpus) >= 2
    gateway_cpus, other_cpus = ({cpus[0]}, set(cpus[1:])) if pinned else (None, None)
    if other_cpus:
        os.sched_setaffinity(0, other_cpus)  # this script and all it starts, but the gateway
    kind = choose_loadgen(args.loadgen)
    loadgen = LoadGenerator(kind, workdir)
    pinning = (
        f"gateways on CPU {cpus[0]}; fake, load generator and this script on CPU {','.join(map(str, cpus[1:]))}"
        if pinned
        else "none (--no-pin or 1 CPU)"
    )
    results: dict[str, Any] = {
        "checkout": checkout(REPO),
        "python": sys.version.split()[0],
        "cpus": len(cpus),
        "pinning": pinning,
        "load_generator": loadgen.describe(),
    }
    print(f"engine checkout {results['checkout']}, Python {results['python']}")
    print(f"CPUs: {len(cpus)}; pinning: {pinning}")
    print(f"load generator: {results['load_generator']}")

    env = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_BASE_URL"))}
    env |= {"ENGINE_DB": str(workdir / "engine.sqlite3"), "ENGINE_SPECS": str(REPO / "specs")}
    engines = {"gateway": engine_from(args.engine)}
    if args.compare_engine:
        engines["gateway-b"] = engine_from(args.compare_engine)
    first = engines["gateway"]
    created = subprocess.run(
        [*first.argv, "keys", "create", "--name", "bench"],
        cwd=first.cwd,
        env={**env, "ENGINE_SPECS": str(first.specs)},
        capture_output=True,
        timeout=60,
    )
    if created.returncode != 0:
        raise RuntimeError(f"engine keys create failed:\n{created.stderr.decode()}")
    key = created.stdout.decode().strip().splitlines()[-1]

    fake_port = free_port()
    fake_argv = [sys.executable, "-m", "tests.fakes.openai_fake", "--host", HOST, "--port", str(fake_port)]
    fake = procs.start([*fake_argv, "--no-record"], env, workdir / "fake.log", None)
    wait_until_listening(fake_port, fake, workdir / "fake.log")
    env |= {"OPENAI_API_KEY": UPSTREAM_KEY, "OPENAI_BASE_URL": f"http://{HOST}:{fake_port}/v1"}
    json_headers = {"Content-Type": "application/json", "Accept": "application/json"}
    direct = Target(
        "direct",
        fake_port,
        "/v1/chat/completions",
        UPSTREAM_MODEL,
        {**json_headers, "Authorization": f"Bearer {UPSTREAM_KEY}"},
    )
    targets = [direct]
    headers = {**json_headers, "Authorization": f"Bearer {key}"}
    for name, engine in engines.items():
        port, log = free_port(), workdir / f"{name}.log"
        serve = [*engine.argv, "serve", "--host", HOST, "--port", str(port), "--workers", "1"]
        engine_env = {**env, "ENGINE_SPECS": str(engine.specs)}
        process = procs.start(serve, engine_env, log, gateway_cpus, cwd=engine.cwd)
        wait_until_listening(port, process, log)
        targets.append(Target(name, port, "/external/v1/chat/completions", PUBLIC_MODEL, headers, process.pid))
        print(f"{name}: {engine.label}: engine serve --workers 1 (pid {process.pid}, port {port})")
    gateways = [t.name for t in targets[1:]]
    if not args.no_floor:  # the bare passthrough, the same key header so that the request bytes match
        port, log = free_port(), workdir / "floor.log"
        floor_argv = [sys.executable, str(Path(__file__).with_name("passthrough.py")), "--host", HOST]
        floor_argv += ["--port", str(port), "--upstream", f"http://{HOST}:{fake_port}/v1", "--key", UPSTREAM_KEY]
        floor_argv += ["--client", args.floor_client]
        process = procs.start(floor_argv, env, log, gateway_cpus)
        wait_until_listening(port, process, log)
        targets.append(Target("floor", port, "/external/v1/chat/completions", UPSTREAM_MODEL, headers, process.pid))
        what = f"bench/passthrough.py --client {args.floor_client}, the bare passthrough"
        print(f"floor: {what} (pid {process.pid}, port {port})")

    results["bodies"] = {}
    if not args.only_soak:
        for name in args.body.split(","):
            doc = load_body(name)
            for target in targets:
                target.body, target.body_name = doc, name if name in BODIES else Path(name).stem
            size = len(direct.body_bytes())
            tools = len(doc.get("tools") or [])
            print(f"\n=== body {name}: {size:,} bytes, {len(doc['messages'])} messages, {tools} tools")
            standard_phases(args, targets, loadgen, results["bodies"].setdefault(name, {"bytes": size}), gateway_cpus)
        if args.relay_requests:
            print(
                f"\n[5] stream relay: {args.rounds} rounds x {args.relay_requests} streams of {RELAY_CHUNKS} chunks"
                " sent back to back by the fake; time from the first event to the end, and CPU"
            )
            relay = results["relay"] = relay_phase(targets, args.rounds, args.relay_requests, fake_port, RELAY_CHUNKS)
            for name, row in relay.items():
                line = f"  {name:<10} after the first event {row['stream_after_first_event_ms']:8.3f} ms"
                if "relay_us_per_chunk" in row:
                    line += f"   relay cost {row['relay_us_per_chunk']:6.2f} µs/chunk"
                if "cpu_us_per_chunk" in row:
                    line += f"   CPU {row['cpu_us_per_chunk']:6.2f} µs/chunk"
                print(line)

    if args.profile:
        results["profile"] = {}
        for stream in (False, True) if args.profile_stream else (False,):
            kind = "-stream" if stream else ""
            for target in targets[1:]:  # the floor too: the same table for both shows where the gap is
                what = "streamed answers" if stream else "JSON answers"
                print(f"\n[6] py-spy profile of {target.name} at concurrency 16, {what}, {args.profile:g} s")
                name = f"{target.name}{kind}"
                raw = args.profile_raw.with_suffix(f".{name}.txt") if args.profile_raw else None
                lines = profile_gateway(target, args.profile, loadgen, raw or workdir / f"profile-{name}.txt", stream)
                results["profile"][name] = lines
                print("\n".join(f"  {x}" for x in lines))

    if args.soak:
        gateway = targets[1]
        note = f"; {', '.join(gateways[1:])} not soaked" if len(gateways) > 1 else ""
        print(
            f"\n[7] soak: {args.soak:g} s at concurrency {SOAK_CONCURRENCY} against {gateway.name}, windows of"
            f" ~{args.soak_window:g} s alternating non-streaming and streaming chat completions{note}"
        )
        results["soak"] = soak_phase(gateway, loadgen, args.soak, args.soak_window, direct.port)
        print(
            f"\n[8] client disconnects mid-stream: {DISCONNECT_ROUNDS} rounds x {DISCONNECTS_PER_ROUND} streaming"
            f" requests, {DISCONNECTS_AT_ONCE} at once, each closed after its first event (the fake streams"
            f" {SLOW_EVENTS} events {SLOW_EVENT_DELAY * 1000:g} ms apart unless the gateway hangs up)"
        )
        results["disconnects"] = disconnect_phase(gateway, direct.port)

    if results["bodies"]:
        print("\nearlier targets: added p50 <= 1 ms at concurrency 1; >= 2,000 RPS on one worker")
        for body, found in results["bodies"].items():
            for name in gateways:
                add = found["latency_c1"][name]["added"]["p50_ms"]
                best = max((row[name]["rps"] for row in found["throughput"].values()), default=float("nan"))
                print(
                    f"  {body:<9} {name}: added p50 {add:.3f} ms ({'met' if add <= 1.0 else 'NOT met'}); "
                    f"best {best:,.0f} RPS ({'met' if best >= 2000 else 'NOT met'})"
                )
        if not args.no_floor:
            results["goals"] = goal_table(results, gateways, "floor")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=10, help="interleaved rounds at concurrency 1 (default 10)")
    parser.add_argument("--requests", type=int, default=300, help="requests per target per round (default 300)")
    parser.add_argument("--stream-requests", type=int, default=100, help="streamed requests per round (default 100)")
    parser.add_argument("--concurrency", default="16,64", help="load levels, comma-separated (default 16,64)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per load run (default 5)")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of warm-up before each load run (default 1)")
    parser.add_argument(
        "--load-rounds", type=int, default=2, help="interleaved load runs per target and level (default 2)"
    )
    parser.add_argument(
        "--loadgen", choices=("auto", "wrk", "python", "aiohttp"), default="auto", help="default: wrk if on PATH"
    )
    parser.add_argument("--no-pin", action="store_true", help="leave process placement to the scheduler")
    parser.add_argument(
        "--body",
        default="small",
        metavar="NAME[,NAME...]",
        help=f"request bodies, each measured in its own interleaved phases: {', '.join(BODIES)} or a JSON file"
        " (default small)",
    )
    parser.add_argument("--no-floor", action="store_true", help="leave out the bare passthrough (bench/passthrough.py)")
    parser.add_argument(
        "--floor-client",
        choices=("aiohttp", "engine"),
        default="aiohttp",
        help="the floor's upstream client: one aiohttp session (issue 13's floor), or the gateway's own",
    )
    parser.add_argument(
        "--relay-requests",
        type=int,
        default=10,
        metavar="N",
        help=f"streams of {RELAY_CHUNKS} chunks per target per round for the relay cost (default 10; 0 skips it)",
    )
    parser.add_argument("--profile", type=float, default=0, metavar="SECONDS", help="py-spy the gateway under load")
    parser.add_argument(
        "--profile-stream", action="store_true", help="with --profile: also profile under streaming load"
    )
    parser.add_argument(
        "--profile-raw", type=Path, metavar="FILE", help="keep py-spy's raw samples in FILE.<target>.txt"
    )
    parser.add_argument(
        "--engine", metavar="DIR|CMD", help="checkout directory or `engine` command (default: this one)"
    )
    parser.add_argument(
        "--compare-engine", metavar="DIR|CMD", help="a second gateway, interleaved with the first (A/B in one run)"
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the results as JSON")
    parser.add_argument(
        "--soak",
        type=float,
        default=0,
        metavar="SECONDS",
        help="also run a soak (sustained concurrency 16, RSS and RPS sampled) and a mid-stream disconnect phase",
    )
    parser.add_argument(
        "--soak-window", type=float, default=10.0, metavar="SECONDS", help="seconds per soak sample (default 10)"
    )
    parser.add_argument("--only-soak", action="store_true", help="skip phases 1-4 (needs --soak)")
    parser.add_argument(
        "--time-limit", type=float, help="hard stop in seconds (default 300, plus SECONDS + 60 with --soak)"
    )
    args = parser.parse_args(argv)
    if args.only_soak and not args.soak:
        parser.error("--only-soak needs --soak SECONDS")
    if args.time_limit is None:
        args.time_limit = 300 * len(args.body.split(",")) + (args.soak + 60 if args.soak else 0)

    def expire(signum: int, frame: object) -> None:
        raise TimeLimit(f"the run exceeded --time-limit {args.time_limit:g} s")

    signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, args.time_limit)
    procs = Processes()
    started = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix="engine-bench-") as workdir:
            try:
                results = run(args, Path(workdir), procs)
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)  # the clean-up itself must not be interrupted
                procs.stop_all()
    except TimeLimit as exc:
        print(f"\nstopped: {exc}; all processes stopped", file=sys.stderr)
        return 2
    results["wall_seconds"] = round(time.monotonic() - started, 1)
    print(f"\nwhole run {results['wall_seconds']:.0f} s; all processes stopped")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
