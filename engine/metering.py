"""Metering: token usage and cost per key, model and day, kept in the embedded database.

The request path only adds to an in-memory tally; a background task folds the tally into SQLite every
few seconds (and at shutdown). Rows are daily aggregates, so the table grows with keys, models and days,
never with traffic.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

from engine.spec.models import Price
from engine.store import Store
from engine.wires.base import Usage


@dataclass
class Tally:
    requests: int = 0
    tokens: Usage = field(default_factory=Usage)
    cost_usd: float = 0.0


def cost_of(usage: Usage, price: Price | None) -> float:
    """USD for `usage` at `price`: tokens and characters are priced per million, other units one by one."""
    if price is None:
        return 0.0
    cached = min(usage.cached_tokens, usage.prompt_tokens) if price.cached_input is not None else 0
    per_million = (
        (usage.prompt_tokens - cached) * price.input
        + cached * (price.cached_input or 0.0)
        + usage.completion_tokens * price.output
        + usage.characters * (price.character or 0.0)
    )
    return (
        per_million / 1_000_000
        + usage.images * (price.image or 0.0)
        + usage.audio_seconds * (price.audio_second or 0.0)
        + usage.video_seconds * (price.video_second or 0.0)
    )


class Meter:
    def __init__(self, store: Store, interval: float = 5.0) -> None:
        self._store = store
        self._interval = interval
        self._pending: dict[tuple[str, str, str, str], Tally] = {}
        self._task: asyncio.Task[None] | None = None

    def record(self, key_id: str, model: str, provider: str, usage: Usage | None, price: Price | None) -> None:
        day = time.strftime("%Y-%m-%d", time.gmtime())
        tally = self._pending.setdefault((key_id, day, model, provider), Tally())
        tally.requests += 1
        if usage is not None:
            tally.tokens.add(usage)
            tally.cost_usd += cost_of(usage, price)

    def flush(self) -> None:
        pending, self._pending = self._pending, {}
        if pending:
            self._store.add_usage(
                [
                    (
                        *k,
                        t.requests,
                        t.tokens.prompt_tokens,
                        t.tokens.completion_tokens,
                        t.tokens.cached_tokens,
                        t.tokens.reasoning_tokens,
                        t.cost_usd,
                    )
                    for k, t in pending.items()
                ]
            )

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            self.flush()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.flush()
