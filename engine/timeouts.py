"""Timeouts: each phase of one upstream attempt bounded, a slot in the provider's own pool, and the caller.

A provider's `[timeouts]` bound five phases, each failing with its own error (`PHASES`):

- `pool`: waiting for one of the provider's `[pool] connections` to come free (`Pool.acquire`);
- `connect`: opening the connection (the transport's own, passed through);
- `first_byte`: from sending until the answer's first body bytes;
- `idle`: every later wait for more of the answer (so a stalled stream is cut, a slow reader is not);
- `total`: the attempt as a whole, the relayed stream included, so an upstream trickling a byte a second
  cannot hold a request open.

The client's own deadline (a routes.toml header) bounds all attempts together, as `Caller.deadline`.

One `Watch` per attempt holds its deadlines, and one `Watchdog` ticker checks every watch in flight
each `TICK`: reading a chunk costs two attribute writes and a clock read, and an attempt no timer at all
(`asyncio.timeout` per chunk cost ~5x a request's whole budget here, a timer per attempt ~20 µs). When a
phase expires while the attempt waits on the upstream, the watch cancels that wait, and the wait raises
`PhaseTimeout` (an `httpx.TimeoutException` carrying the phase) instead of `CancelledError`; any other
cancellation passes through untouched.

The watch also notices a slow request (`SLOW` seconds in flight) and asks the `Caller` to start listening
for the client's disconnect: a client that hangs up then cancels the request, and with it the upstream
call, within a second, while fast requests never pay for a listener task.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from engine.errors import Kind
from engine.spec.models import Timeouts

SLOW = 0.5  # seconds in flight after which the caller's disconnect is listened for
TICK = 0.1  # seconds between two checks of the attempts in flight: a phase expires at most this late
# An upstream faster than the gateway never makes a read wait, and a send to a client that has left returns
# at once: such a relay would never give the event loop back, so neither the client's disconnect (which ends
# it) nor other requests would get a turn until the upstream finished. Every this many chunks it yields.
YIELD_EVERY = 16


@dataclass(frozen=True)
class Phase:
    status: int
    code: str
    message: str  # formatted with `provider` and `seconds`


PHASES = {
    Kind.POOL_TIMEOUT: Phase(
        504,
        "upstream_pool_timeout",
        "No connection to the upstream provider `{provider}` came free within {seconds:g} s. Retry shortly.",
    ),
    Kind.CONNECT_TIMEOUT: Phase(
        504,
        "upstream_connect_timeout",
        "Connecting to the upstream provider `{provider}` took longer than {seconds:g} s. Retry shortly.",
    ),
    Kind.FIRST_BYTE_TIMEOUT: Phase(
        504,
        "upstream_first_byte_timeout",
        "The upstream provider `{provider}` did not start answering within {seconds:g} s. Retry, or try later.",
    ),
    Kind.IDLE_TIMEOUT: Phase(
        504,
        "upstream_idle_timeout",
        "The upstream provider `{provider}` stopped sending for more than {seconds:g} s mid-answer.",
    ),
    Kind.TOTAL_TIMEOUT: Phase(
        504,
        "upstream_total_timeout",
        "The upstream provider `{provider}` did not finish its answer within {seconds:g} s.",
    ),
    Kind.DEADLINE: Phase(
        504,
        "deadline_exceeded",
        "The request's deadline passed before the upstream provider `{provider}` answered.",
    ),
}


def seconds_of(timeouts: Timeouts, kind: Kind) -> float:
    """The configured limit a phase error reports."""
    return {
        Kind.POOL_TIMEOUT: timeouts.pool,
        Kind.CONNECT_TIMEOUT: timeouts.connect,
        Kind.FIRST_BYTE_TIMEOUT: timeouts.first_byte_s,
        Kind.IDLE_TIMEOUT: timeouts.idle_s,
        Kind.TOTAL_TIMEOUT: timeouts.total,
    }.get(kind, 0.0)


class PhaseTimeout(httpx.TimeoutException):
    def __init__(self, kind: Kind, request: httpx.Request | None = None) -> None:
        super().__init__(kind.value, request=request)
        self.kind = kind


# ------------------------------------------------------------------------------------------ the caller

Receive = Callable[[], Awaitable[Any]]


class Caller:
    """The client side of one request: its deadline (loop time) and how to notice it hung up.

    Set per request by the route handler (`CALLER`); the attempt machinery reads it from there, so no
    operation's signature has to carry it."""

    __slots__ = ("_asked", "_listener", "deadline", "dropped", "gone", "idle", "receive", "sending_since", "task")

    def __init__(self, receive: Receive | None, deadline: float | None = None, idle: float = math.inf) -> None:
        self.receive = receive
        self.deadline = deadline
        self.task: asyncio.Task[Any] | None = asyncio.current_task()
        self.gone = False
        # A relayed stream's send to the client: when the one under way began (loop time; inf while none is),
        # and how long one may take (routes.toml `answer_idle_seconds`) before the client counts as gone.
        self.idle = idle
        self.sending_since = math.inf
        self.dropped = False
        self._asked = False  # listening was asked for (a slow request): a resumed stream listens at once
        self._listener: asyncio.Task[None] | None = None

    def listen(self) -> None:
        """Start listening for the client's disconnect (once); it cancels the request's task."""
        self._asked = True
        if self._listener is None and self.receive is not None and self.task is not None:
            self._listener = asyncio.get_running_loop().create_task(self._listen(self.receive, self.task))

    async def _listen(self, receive: Receive, task: asyncio.Task[Any]) -> None:
        while True:
            message = await receive()
            if message.get("type") == "http.disconnect":
                self.gone = True
                if not task.done():
                    task.cancel()
                return

    def drop(self) -> None:
        """The client has taken nothing of a relayed stream for `idle` seconds: end the request as though it
        had hung up (its task cancelled, the upstream closed with it); the server then closes the connection."""
        self.gone = self.dropped = True
        if self.task is not None and not self.task.done():
            self.task.cancel()

    def stop(self) -> None:
        """The handler (or the stream it returned) is done: listen no more, until `resume`."""
        self.task = None
        if self._listener is not None:
            self._listener.cancel()
            self._listener = None

    def resume(self) -> asyncio.Task[Any] | None:
        """A stream the handler returned is being sent, by this task (`engine.respond.StreamAnswer`): the
        client's disconnect cancels it again, listened for at once if the request was already slow, else when
        its attempt's watch asks. Returns the task a disconnect cancels."""
        self.task = asyncio.current_task()
        if self._asked:
            self.listen()
        return self.task


CALLER: contextvars.ContextVar[Caller | None] = contextvars.ContextVar("engine_caller", default=None)


# -------------------------------------------------------------------------------------------- the pool


class Pool:
    """A provider's own share of upstream connections: one slow provider cannot starve the others.

    A free slot is taken without awaiting anything (`take`); only a full pool queues, in arrival order,
    for at most `wait` seconds (`wait_for_slot`)."""

    def __init__(self, client: httpx.AsyncClient, connections: int, wait: float) -> None:
        self.client = client
        self.size = connections
        self.wait = wait
        self.in_use = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    def take(self) -> bool:
        if self.in_use < self.size and not self._waiters:
            self.in_use += 1
            return True
        return False

    async def wait_for_slot(self, request: httpx.Request) -> None:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(self.wait):
                await waiter  # `release` hands its slot over: in_use stays counted
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled():
                self.release()  # handed a slot just as the wait ended: pass it on
            if isinstance(exc, TimeoutError):
                raise PhaseTimeout(Kind.POOL_TIMEOUT, request) from None
            raise
        finally:
            if not waiter.done():
                waiter.cancel()
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)

    def release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot goes straight to the next in line
                return
        self.in_use -= 1


# ------------------------------------------------------------------------------------------- the watch


class Watchdog:
    """One ticker for every attempt in flight: each `TICK` it checks their watches. A timer per attempt
    (`loop.call_at` and its cancel) cost ~20 µs a request on this machine; joining this set costs nothing
    measurable, and a phase expires at most one tick late. The ticker runs only while attempts are in flight."""

    def __init__(self, tick: float = TICK) -> None:
        self.tick = tick
        self._watches: set[Watch] = set()
        self._task: asyncio.Task[None] | None = None

    def add(self, watch: Watch) -> None:
        self._watches.add(watch)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    def discard(self, watch: Watch) -> None:
        self._watches.discard(watch)

    async def close(self) -> None:
        task = self._task
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                await asyncio.sleep(self.tick)
                if not self._watches:
                    return  # a whole tick with nothing in flight: the next attempt starts a new ticker
                now = loop.time()
                for watch in list(self._watches):
                    if watch.check(now):
                        self._watches.discard(watch)
        finally:
            self._task = None


class Watch:
    """Bounds one attempt's first byte, idle gaps, total time and the caller's deadline (checked by the
    `Watchdog`'s ticks)."""

    __slots__ = (
        "__weakref__",
        "_caller",
        "_dog",
        "_first_by",
        "_idle",
        "_loop",
        "_slow_at",
        "_total_by",
        "_waiting",
        "_waiting_since",
        "cut",
        "fired",
        "started",
    )

    def __init__(self, timeouts: Timeouts, caller: Caller | None, dog: Watchdog) -> None:
        loop = self._loop = asyncio.get_running_loop()
        now = loop.time()
        self._caller = caller
        self._idle = timeouts.idle_s
        self._first_by = now + timeouts.first_byte_s
        total_by = now + timeouts.total
        deadline = caller.deadline if caller is not None else None
        self._total_by = (total_by, Kind.TOTAL_TIMEOUT)
        if deadline is not None and deadline < total_by:
            self._total_by = (deadline, Kind.DEADLINE)
        self._slow_at = now + SLOW if caller is not None and caller.receive is not None else math.inf
        self.started = False  # the first body bytes arrived
        self.fired: Kind | None = None
        self.cut: asyncio.Task[Any] | None = None  # the task this watch cancelled, until it reports
        self._waiting: asyncio.Task[Any] | None = None
        self._waiting_since = now
        self._dog = dog
        dog.add(self)

    def _due(self) -> tuple[float, Kind]:
        if not self.started:
            due = (self._first_by, Kind.FIRST_BYTE_TIMEOUT)
        elif self._waiting is not None:
            due = (self._waiting_since + self._idle, Kind.IDLE_TIMEOUT)
        else:
            due = (math.inf, Kind.IDLE_TIMEOUT)
        return min(due, self._total_by)

    def check(self, now: float) -> bool:
        """One tick: drop a caller that takes none of the relayed stream; start listening for a slow request's
        caller; expire a phase. True once fired."""
        caller = self._caller
        if caller is not None and now - caller.sending_since >= caller.idle:
            caller.drop()
            return True
        if now >= self._slow_at:  # only set with a caller
            self._slow_at = math.inf
            assert caller is not None
            caller.listen()
        when, kind = self._due()
        if now < when:
            return False
        self.fired = kind
        if self._waiting is not None:
            self.cut = self._waiting
            self._waiting.cancel()
        return True

    def begin(self) -> None:
        """About to wait on the upstream."""
        if self.fired is not None:
            raise PhaseTimeout(self.fired)
        self._waiting = asyncio.current_task(self._loop)  # the loop given: one lookup, per chunk
        self._waiting_since = self._loop.time()

    def end(self, got_bytes: bool) -> None:
        self._waiting = None
        if got_bytes:
            self.started = True

    def timed_out(self) -> PhaseTimeout | None:
        """In an `except CancelledError`: the timeout this watch's own cancel stands for, or None when the
        cancellation came from elsewhere (and must propagate)."""
        task = self.cut
        if task is None or self.fired is None:
            return None
        self.cut = None
        return PhaseTimeout(self.fired) if task.uncancel() == 0 else None

    def stop(self) -> None:
        self._dog.discard(self)


class WatchedStream(httpx.AsyncByteStream):
    """An upstream body read under its attempt's `Watch`; closing it stops the watch and frees the slot."""

    def __init__(self, inner: Any, watch: Watch, release: Callable[[], None]) -> None:
        self._inner = inner
        self._watch = watch
        self._release: Callable[[], None] | None = release

    async def __aiter__(self) -> AsyncIterator[bytes]:
        watch = self._watch
        chunks = self._inner.__aiter__()
        count = 0
        while True:
            count += 1
            if not count % YIELD_EVERY:
                await asyncio.sleep(0)  # see YIELD_EVERY
            watch.begin()
            try:
                chunk = await chunks.__anext__()
            except StopAsyncIteration:
                watch.end(True)
                return
            except asyncio.CancelledError:
                watch.end(False)
                timeout = watch.timed_out()
                if timeout is None:
                    raise
                raise timeout from None
            except BaseException:
                watch.end(False)
                raise
            watch.end(True)
            yield chunk

    async def aclose(self) -> None:
        self._watch.stop()
        if self._release is not None:
            self._release()
            self._release = None
        await self._inner.aclose()
