"""The in-process test layer: the whole gateway app over `httpx.MockTransport`, on a virtual clock.

`VirtualClockLoop` is an asyncio event loop whose clock only moves when nothing is ready to run and no
thread is working for it: then it jumps straight to the next timer. So a 2 s backoff, a 30 s hang or a
breaker's cool-down take no real time, and what a test reads from `loop.time()` is exact. The app is
reached through `httpx.ASGITransport` and the upstreams are `ScriptedUpstreams`, so no socket is waited
on; the SQLite store's thread is, and the clock stands still meanwhile.

    with InProcess(tmp_path) as gw:
        gw.upstreams.script("openai", status(503), status(503))
        response = gw.post(CHAT, json=BODY)
        assert gw.upstreams.hits("openai") == 2

Scripted steps are small async functions of the request: `ok()`, `status(...)`, `refuse()`, `hang()`,
`sse(...)` (optionally with gaps between events and a cut at the end). A provider with nothing scripted
answers like `ok()`.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import selectors
import shutil
import tomllib
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from engine.app import build_app
from engine.gateway import Gateway
from tests.conftest import REPO

Step = Callable[[httpx.Request], Awaitable[httpx.Response]]


class _VirtualSelector(selectors.BaseSelector):
    """A real selector that, instead of blocking until a timer is due, advances the loop's clock to it."""

    def __init__(self, loop: VirtualClockLoop) -> None:
        self._real = selectors.DefaultSelector()
        self._loop = loop

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._real.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.modify(fileobj, events, data)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = self._real.select(0)
        if ready or timeout == 0:
            return ready
        if timeout is None or self._loop.in_threads:  # only real work (I/O, a thread) can wake the loop now
            return self._real.select(None)
        self._loop.now += timeout
        return []

    def get_map(self) -> Any:
        return self._real.get_map()

    def close(self) -> None:
        self._real.close()


class VirtualClockLoop(asyncio.SelectorEventLoop):
    """Virtual time stands still while work runs in a thread (the SQLite store's executor): jumping ahead
    then would let timers fire "during" real work that takes no virtual time."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.in_threads = 0
        super().__init__(_VirtualSelector(self))

    def time(self) -> float:
        return self.now

    def run_in_executor(self, executor: Any, func: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        future = super().run_in_executor(executor, func, *args)
        self.in_threads += 1
        future.add_done_callback(self._thread_done)
        return future

    def _thread_done(self, future: asyncio.Future[Any]) -> None:
        self.in_threads -= 1


# ------------------------------------------------------------------------------------------ upstreams


def _completion(request: httpx.Request) -> dict[str, Any]:
    body = json.loads(request.content or b"{}")
    return {
        "id": "chatcmpl-mock",
        "object": "chat.completion",
        "created": 1,
        "model": body.get("model"),
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi."}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
    }


def chunk(content: str, finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-mock",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": finish}],
    }


def ok() -> Step:
    async def step(request: httpx.Request) -> httpx.Response:
        if json.loads(request.content or b"{}").get("stream"):
            return await sse([chunk("Hi."), chunk("", "stop")])(request)
        return httpx.Response(200, json=_completion(request))

    return step


def status(code: int, error_code: str | None = None, headers: dict[str, str] | None = None) -> Step:
    async def step(request: httpx.Request) -> httpx.Response:
        error = {"message": f"upstream says {code}", "type": "server_error", "param": None, "code": error_code}
        return httpx.Response(code, json={"error": error}, headers=headers)

    return step


def refuse() -> Step:
    async def step(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    return step


def fail(exc: type[httpx.TransportError]) -> Step:
    async def step(request: httpx.Request) -> httpx.Response:
        raise exc(exc.__name__, request=request)

    return step


def hang(seconds: float = 3600.0) -> Step:
    async def step(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(seconds)
        return httpx.Response(200, json=_completion(request))

    return step


def sse(events: list[Any], gap: float = 0.0, cut: bool = False) -> Step:
    """Events as `data:` lines (objects JSON-encoded), `gap` seconds apart; `cut` drops the connection
    after the last one instead of sending `[DONE]`."""

    async def step(request: httpx.Request) -> httpx.Response:
        async def body() -> AsyncIterator[bytes]:
            for event in events:
                data = event if isinstance(event, str) else json.dumps(event)
                yield f"data: {data}\n\n".encode()
                if gap:
                    await asyncio.sleep(gap)
            if cut:
                raise httpx.RemoteProtocolError("peer closed the connection", request=request)
            yield b"data: [DONE]\n\n"

        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body())

    return step


def trickle(gap: float, pieces: int = 10_000) -> Step:
    """A 200 JSON answer sent one byte every `gap` seconds (never idle for long, never done)."""

    async def step(request: httpx.Request) -> httpx.Response:
        async def body() -> AsyncIterator[bytes]:
            for _ in range(pieces):
                yield b" "
                await asyncio.sleep(gap)

        return httpx.Response(200, headers={"content-type": "application/json"}, content=body())

    return step


@dataclass
class ScriptedUpstreams:
    """Every provider's upstream, told apart by host (`<provider>.test`); records what each received."""

    scripts: dict[str, deque[Step]] = field(default_factory=lambda: defaultdict(deque))
    received: list[tuple[str, httpx.Request, float]] = field(default_factory=list)

    def script(self, provider: str, *steps: Step) -> None:
        self.scripts[provider].extend(steps)

    def hits(self, provider: str | None = None) -> int:
        return sum(1 for p, _, _ in self.received if provider in (None, p))

    def order(self) -> list[str]:
        return [p for p, _, _ in self.received]

    def times(self, provider: str | None = None) -> list[float]:
        """The virtual time each request arrived at."""
        return [t for p, _, t in self.received if provider in (None, p)]

    def reset(self) -> None:
        self.scripts.clear()
        self.received.clear()

    async def handle(self, request: httpx.Request) -> httpx.Response:
        provider = request.url.host.removesuffix(".test")
        self.received.append((provider, request, asyncio.get_running_loop().time()))
        queue = self.scripts[provider]
        return await (queue.popleft() if queue else ok())(request)


# ------------------------------------------------------------------------------------------- gateway


class InProcess:
    """The gateway app with the shipped specs plus tests/fixtures/providers, every provider live and
    pointed at `ScriptedUpstreams`. `edit` rewrites spec files (path relative to specs/) before start."""

    def __init__(
        self, tmp: Path, edit: dict[str, Callable[[str], str]] | None = None, unconfigured: tuple[str, ...] = ("azure",)
    ) -> None:
        """`unconfigured`: providers left without credentials. Azure serves OpenAI's models ahead of OpenAI
        (its priority is lower); the policy tests here are written against OpenAI's, so it stays out by default."""
        specs = tmp / "specs"
        shutil.copytree(REPO / "specs", specs)
        for extra in (REPO / "tests" / "fixtures" / "providers").glob("*.toml"):
            shutil.copy(extra, specs / "providers" / extra.name)
        for name, change in (edit or {}).items():
            path = specs / name
            path.write_text(change(path.read_text()))
        # The key is verified once, below, and trusted after: a database lookup waits on the storage thread,
        # and waiting on anything but a timer would let the virtual clock jump to the next one.
        routes = specs / "routes.toml"
        routes.write_text(routes.read_text().replace("key_cache_seconds = 1.0", "key_cache_seconds = 86400.0"))
        env = {}
        for path in (specs / "providers").glob("*.toml"):
            spec = tomllib.loads(path.read_text())
            provider = spec["provider"]
            if provider["id"] in unconfigured:
                continue
            env[spec["auth"]["env"]] = f"sk-{provider['id']}-0000000000"
            if "base_url_env" in provider:
                env[provider["base_url_env"]] = f"http://{provider['id']}.test/v1"
        self.upstreams = ScriptedUpstreams()
        self.gateway = Gateway.build(
            specs, str(tmp / "engine.sqlite3"), httpx.MockTransport(self.upstreams.handle), env
        )
        self.loop = VirtualClockLoop()
        self.run(self.gateway.database.open())  # no lifespan runs here: open the database ourselves
        self.key = self.run(self.gateway.database.create_key("inprocess", self.gateway.specs.routes.gateway.key_prefix))
        self.run(self.gateway.authenticate(f"Bearer {self.key}"))
        self._client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=build_app(self.gateway)),
            base_url="http://gateway.test",
            headers={"Authorization": f"Bearer {self.key}"},
        )

    def __enter__(self) -> InProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.run(self._client.aclose())
        self.run(self.gateway.watchdog.close())
        self.run(self.gateway.client.aclose())
        self.run(self.gateway.database.close())
        self.loop.close()

    def reset(self) -> InProcess:
        """Forget scripts and what was received, so one gateway can serve many tests."""
        self.upstreams.reset()
        self.gateway.health.reset()
        return self

    def run(self, coro: Awaitable[Any]) -> Any:
        return self.loop.run_until_complete(coro)

    def posts(self, *requests: dict[str, Any]) -> list[httpx.Response]:
        """Several requests at once (`path` plus httpx's keyword arguments each)."""

        async def all_of() -> list[httpx.Response]:
            return await asyncio.gather(*(self._client.post(r.pop("path"), **r) for r in map(dict, requests)))

        return self.run(all_of())  # type: ignore[no-any-return]

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.run(self._client.get(path, **kwargs))  # type: ignore[no-any-return]

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.run(self._client.post(path, **kwargs))  # type: ignore[no-any-return]

    def timed_post(self, path: str, **kwargs: Any) -> tuple[httpx.Response, float]:
        """The answer and the virtual seconds it took."""
        began = self.loop.time()
        response = self.post(path, **kwargs)
        return response, self.loop.time() - began


def gaps(times: list[float]) -> list[float]:
    """The waits between consecutive times."""
    return [b - a for a, b in itertools.pairwise(times)]
