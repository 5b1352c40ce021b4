"""The usage ledger's writer: one row per proxied request, batched off the request path.

A request carries a `Trip` (who, what, since when, how many attempts); when its answer is complete
(for a stream: when the stream ends, however it ends) `Recorder.finish` turns it into a `UsageRow`
priced from the catalog and appends it to an in-memory batch. A background task writes the batch every
`ledger.flush_seconds` and at shutdown, so recording costs the request no database round trip and a
clean stop (SIGTERM) loses nothing. The same task rolls raw rows older than `ledger.retention_days`
up into daily aggregates.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import itertools
import logging
import operator
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from engine.spec.models import LedgerPolicy, Price
from engine.storage import Ledger, UsageRow
from engine.wires.base import UNIT_FIELDS, Usage

if TYPE_CHECKING:
    from engine.catalog import Candidate

log = logging.getLogger("engine.ledger")

# Request ids: random per process, then a counter; unique across instances without a random draw per request.
_INSTANCE = secrets.token_hex(8)
_SEQUENCE = itertools.count()
_ROLL_UP_EVERY = 3600.0  # seconds between roll-up passes; the first runs at start-up
_MAX_PENDING = 1_000_000  # rows kept in memory while the database is unreachable, before dropping the oldest


def cost_of(usage: Usage, price: Price | None) -> float:
    """USD for `usage` at `price`: tokens and characters are priced per million, other units one by one."""
    if price is None:
        return 0.0
    if not (usage.cached_tokens or usage.cache_write_tokens or _has_units(usage)):  # most answers: one line
        return (usage.prompt_tokens * price.input + usage.completion_tokens * price.output) / 1_000_000
    cached = min(usage.cached_tokens, usage.prompt_tokens) if price.cached_input is not None else 0
    written = min(usage.cache_write_tokens, usage.prompt_tokens - cached) if price.cache_write is not None else 0
    per_million = (
        (usage.prompt_tokens - cached - written) * price.input
        + cached * (price.cached_input or 0.0)
        + written * (price.cache_write or 0.0)
        + usage.completion_tokens * price.output
        + usage.characters * (price.character or 0.0)
    )
    return (
        per_million / 1_000_000
        + usage.images * (price.image or 0.0)
        + usage.audio_seconds * (price.audio_second or 0.0)
        + usage.video_seconds * (price.video_second or 0.0)
    )


@dataclass(slots=True)
class Trip:
    """One proxied request on its way through the gateway: what its ledger row will say."""

    key_id: str
    operation: str
    request_id: str
    ts: float  # wall clock at arrival
    started: float  # perf_counter at arrival
    attempts: int = 0
    chunks: int = 0  # stream chunks relayed: the estimate of completion tokens if the stream is cut short
    prompt_estimate: int = 0  # ~4 bytes per token of the request body, for the same case
    stream_error: bool = False  # the upstream sent an error event inside a stream
    candidate: Candidate | None = None  # the provider of the latest attempt
    release: Callable[[UsageRow | None], None] | None = None  # the limiter's, once admitted
    receipt: bool = False  # the route attaches a receipt to the answer
    recorded: bool = False

    @classmethod
    def begin(cls, key_id: str, operation: str, started: float) -> Trip:
        return cls(key_id, operation, f"req_{_INSTANCE}{next(_SEQUENCE):08x}", time.time(), started)


_NO_USAGE = Usage()
_CUT_SHORT = frozenset({"client_closed", "stream_broken", "timeout"})  # streams that ended without their usage


_unit_values = operator.attrgetter(*UNIT_FIELDS)
_NO_UNITS: Mapping[str, float] = MappingProxyType({})  # shared by every token-only row, so read-only


def _has_units(usage: Usage) -> bool:
    return bool(usage.images or usage.characters or usage.audio_seconds or usage.video_seconds)


def _units(usage: Usage) -> Mapping[str, float]:
    if not _has_units(usage):
        return _NO_UNITS
    return {name: value for name, value in zip(UNIT_FIELDS, _unit_values(usage), strict=True) if value}


def receipt_of(row: UsageRow) -> dict[str, Any]:
    """What a route with `receipt = true` attaches to its answer: the ledger row's usage and cost."""
    return {
        "request_id": row.request_id,
        "model": row.public_model,
        "provider": row.provider,
        "usage": {
            "prompt_tokens": row.prompt_tokens,
            "completion_tokens": row.completion_tokens,
            "reasoning_tokens": row.reasoning_tokens,
            "cached_tokens": row.cached_tokens,
            **({"cache_write_tokens": row.cache_write_tokens} if row.cache_write_tokens else {}),
            **row.units,
        },
        "cost_usd": round(row.cost_usd, 9),
        "attempts": row.attempts,
    }


class Recorder:
    def __init__(self, ledger: Ledger, policy: LedgerPolicy) -> None:
        self._ledger = ledger
        self._policy = policy
        self._batch_rows = policy.batch_rows
        self._pending: list[UsageRow] = []
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._stopping = False

    def finish(self, trip: Trip, usage: Usage | None, status: int, outcome: str = "ok") -> UsageRow | None:
        """Record the trip once (a stream's relay and its error path may both try): a row if it reached a
        provider, and the limiter's release in any case."""
        if trip.recorded:
            return None
        trip.recorded = True
        row = None if trip.candidate is None else self._row(trip, trip.candidate, usage, status, outcome)
        if row is not None:
            self.add(row)
        if trip.release is not None:
            trip.release(row)
        return row

    def _row(self, trip: Trip, candidate: Candidate, usage: Usage | None, status: int, outcome: str) -> UsageRow:
        estimated = usage is None and outcome in _CUT_SHORT and trip.chunks > 0
        if estimated:
            usage = Usage(prompt_tokens=trip.prompt_estimate, completion_tokens=trip.chunks)
        if trip.stream_error and outcome == "ok":
            outcome = "error"
        if usage is None:
            usage = _NO_USAGE
        return UsageRow(
            trip.ts,
            trip.request_id,
            trip.key_id,
            candidate.public_id,
            candidate.provider.id,
            candidate.row.upstream,
            trip.operation,
            status,
            outcome,
            usage.prompt_tokens,
            usage.completion_tokens,
            usage.reasoning_tokens,
            usage.cached_tokens,
            _units(usage),
            cost_of(usage, candidate.row.price),
            round((time.perf_counter() - trip.started) * 1000, 3),
            trip.attempts or 1,
            estimated,
            usage.cache_write_tokens,
        )

    def add(self, row: UsageRow) -> None:
        pending = self._pending
        pending.append(row)
        if len(pending) >= self._batch_rows:
            self._wake.set()

    async def flush(self) -> int:
        """Write what is pending. On a database failure the rows stay pending for the next try."""
        rows, self._pending = self._pending, []
        if not rows:
            return 0
        try:
            await self._ledger.append(rows)
        except Exception:
            log.exception("could not write %d usage rows; keeping them for the next flush", len(rows))
            self._pending[:0] = rows
            del self._pending[:-_MAX_PENDING]
            return 0
        return len(rows)

    async def roll_up(self, today: datetime.date | None = None) -> int:
        today = today or datetime.datetime.now(datetime.UTC).date()
        before = (today - datetime.timedelta(days=self._policy.retention_days)).isoformat()
        return await self._ledger.roll_up(before)

    async def _run(self) -> None:
        next_roll_up = 0.0
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._policy.flush_seconds)
            self._wake.clear()
            await self.flush()
            if time.monotonic() >= next_roll_up and not self._stopping:
                next_roll_up = time.monotonic() + _ROLL_UP_EVERY
                try:
                    folded = await self.roll_up()
                except Exception:
                    log.exception("usage roll-up failed; retrying in an hour")
                else:
                    if folded:
                        log.info("rolled %d usage rows up into daily aggregates", folded)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Write everything pending. The writer is woken, never cancelled: a cancelled write could drop
        the batch it holds."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await self._task
        await self.flush()
