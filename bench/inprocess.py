"""The gateway's own work per request, stage by stage, in one process: where the microseconds per byte go.

    .venv/bin/python bench/inprocess.py                       # small, opencode and agent bodies
    .venv/bin/python bench/inprocess.py --body agent --repeat 50
    .venv/bin/python bench/inprocess.py --profile agent       # cProfile of the whole request, top 25 lines

No sockets, no other process: the gateway is built as `engine serve` builds it, over an `httpx.MockTransport`
whose upstream answers like the fake (a ~500-byte tool call), and every stage of the chat completions path is
timed on its own (CPU time), then the whole request through the ASGI application (Litestar's routing and response
machinery included; uvicorn and the network excluded). Each figure is the median of `--repeat` runs; the yardstick
is one `msgspec` decode + encode of the same body. Issue 13 asks that validation, mappings and lowering not cost
more per byte than parsing does, and that the gateway's own work stay within 3x the yardstick.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import os
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import msgspec

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from run import PUBLIC_MODEL, UPSTREAM_KEY, load_body, request_body  # noqa: E402

from engine.app import build_app  # noqa: E402
from engine.gateway import Gateway  # noqa: E402
from engine.operations import OPERATIONS  # noqa: E402
from engine.validate import parse_json_object  # noqa: E402

ANSWER = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1760000000,
        "model": "gpt-4.1",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "refusal": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "bash", "arguments": '{"command":"pytest -q"}'},
                        }
                    ],
                },
                "logprobs": None,
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19},
    }
).encode()


def median_us(work: Callable[[], Any], repeat: int) -> float:
    """Median CPU time of `work` (process time: on a shared machine, time spent waiting for a core is not
    the gateway's; wall-clock medians of the same code moved by 2x between runs here, CPU time by ~10 %)."""
    times = []
    clock = time.process_time
    for _ in range(repeat):
        started = clock()
        work()
        times.append(clock() - started)
    return statistics.median(times) * 1e6


class _Answer(httpx.AsyncByteStream):
    """The answer as a stream, as the real transport gives it. A `content=` Response is read and closed at
    birth, so closing it later never reaches the stream the gateway wraps, and its pool slot is never freed."""

    async def __aiter__(self) -> Any:
        yield ANSWER


def build(workdir: Path) -> tuple[Gateway, Any]:
    os.environ.update({"OPENAI_API_KEY": UPSTREAM_KEY, "OPENAI_BASE_URL": "http://upstream.invalid/v1"})
    transport = httpx.MockTransport(
        lambda request: httpx.Response(200, stream=_Answer(), headers={"content-type": "application/json"})
    )
    gw = Gateway.build(REPO / "specs", f"sqlite:///{workdir / 'engine.sqlite3'}", transport)
    return gw, build_app(gw)


class Asgi:
    """Drive the Litestar application directly: one POST, the answer collected from `send`."""

    def __init__(self, app: Any, key: str) -> None:
        self.app, self.key = app, key

    async def post(self, body: bytes) -> tuple[int, bytes, dict[str, str]]:
        sent: list[dict[str, Any]] = []
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/external/v1/chat/completions",
            "raw_path": b"/external/v1/chat/completions",
            "query_string": b"",
            "root_path": "",
            "headers": [
                (b"host", b"127.0.0.1"),
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"authorization", f"Bearer {self.key}".encode()),
            ],
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 2),
            "state": {},
        }
        messages = [{"type": "http.request", "body": body, "more_body": False}]
        complete = asyncio.Event()

        async def receive() -> dict[str, Any]:
            if messages:
                return messages.pop(0)
            await complete.wait()  # as uvicorn: a connected client "disconnects" once the answer is complete
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                complete.set()

        await self.app(scope, receive, send)
        start = next(m for m in sent if m["type"] == "http.response.start")
        payload = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
        headers = {k.decode(): v.decode() for k, v in start["headers"]}
        return start["status"], payload, headers


def stages(gw: Gateway, raw: bytes, repeat: int) -> dict[str, float]:
    row = OPERATIONS["chat.completions"]
    assert row.validate is not None and row.prepare is not None
    body = parse_json_object(raw)
    candidate = gw.catalog.resolve_all(PUBLIC_MODEL)[0]
    upstream, _ = row.prepare(body, candidate, gw.context)
    validate, prepare = row.validate, row.prepare
    depth = gw.specs.routes.gateway.max_json_depth
    return {
        "msgspec decode + encode (yardstick)": median_us(lambda: msgspec.json.encode(msgspec.json.decode(raw)), repeat),
        "parse (msgspec decode)": median_us(lambda: parse_json_object(raw), repeat),
        "parse + depth bound (routes.toml max_json_depth)": median_us(lambda: parse_json_object(raw, depth), repeat),
        "validate (pydantic)": median_us(lambda: validate(body), repeat),
        "resolve model": median_us(lambda: gw.catalog.resolve_all(PUBLIC_MODEL), repeat),
        "prepare (capabilities, wire, mappings, lower)": median_us(
            lambda: prepare(body, candidate, gw.context), repeat
        ),
        "encode upstream body (msgspec)": median_us(lambda: msgspec.json.encode(upstream.body), repeat),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--body", default="small,opencode,agent", help="bodies, comma-separated (see bench/run.py)")
    parser.add_argument("--repeat", type=int, default=0, help="runs per figure (default: ~0.3 s worth per stage)")
    parser.add_argument("--profile", metavar="BODY", help="cProfile whole requests with this body instead")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="engine-inprocess-") as workdir:
        gw, app = build(Path(workdir))
        loop = asyncio.new_event_loop()
        loop.run_until_complete(gw.startup())
        key = loop.run_until_complete(gw.database.create_key("bench", gw.specs.routes.gateway.key_prefix))
        client = Asgi(app, key)
        try:
            if args.profile:
                raw = request_body(load_body(args.profile), PUBLIC_MODEL)
                status, answer, _ = loop.run_until_complete(client.post(raw))
                assert status == 200, answer[:300]
                profiler = cProfile.Profile()
                profiler.enable()
                for _ in range(args.repeat or 20):
                    loop.run_until_complete(client.post(raw))
                profiler.disable()
                out = io.StringIO()
                pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(25)
                print(out.getvalue())
                return 0
            for name in args.body.split(","):
                raw = request_body(load_body(name), PUBLIC_MODEL)
                status, answer, _ = loop.run_until_complete(client.post(raw))
                if status != 200:
                    raise SystemExit(f"{name}: the gateway answered {status}: {answer[:300]!r}")
                repeat = args.repeat or max(5, min(2000, int(300_000 / (len(raw) / 30 + 30))))
                found = stages(gw, raw, repeat)
                found["whole request through the ASGI app"] = median_us(
                    lambda raw=raw: loop.run_until_complete(client.post(raw)), repeat
                )
                overhead = [float(loop.run_until_complete(client.post(raw))[2].get("x-compose-overhead-ms", "nan"))]
                yard = found["msgspec decode + encode (yardstick)"]
                print(f"\n{name}: {len(raw):,} bytes, {repeat} runs per figure (median)")
                print(f"  {'stage':<48} {'µs':>10} {'ns/byte':>9} {'x yardstick':>12}")
                for stage, us in found.items():
                    print(f"  {stage:<48} {us:10.1f} {us * 1000 / len(raw):9.2f} {us / yard:12.2f}")
                print(f"  overhead header of one more request: {overhead[0]:.3f} ms")
        finally:
            loop.run_until_complete(gw.shutdown())
            loop.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
