"""`engine` as it was before issue 12, for bench/limits.py's A/B: no limits, and the old daily tally instead of
the ledger.

Before limits and the ledger, the request path did no admission at all and metered a request by adding it to
an in-memory tally per key, day, model and provider (engine/metering.py, removed in 372c8d5), folded into
SQLite every few seconds. This runs the current engine with exactly that in their place, so the A/B measures
what limits and the ledger cost on today's request path, not every other change since:

- `Gatekeeper.admit` admits at once and settles nothing;
- `Recorder.finish` adds to a tally as `Meter.record` did (cost from the catalog's prices included) and writes
  no row.

    python bench/limits_before.py serve --port 9200      # any `engine` command line
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine import cli, ledger, limits
from engine.storage.base import KeyRecord
from engine.wires.base import Usage


@dataclass
class Tally:
    requests: int = 0
    tokens: Usage = field(default_factory=Usage)
    cost_usd: float = 0.0


TALLY: dict[tuple[str, str, str, str], Tally] = {}


async def admit(self: limits.Gatekeeper, key: KeyRecord, estimate: int) -> Callable[[Any], None] | None:
    return None


def finish(self: ledger.Recorder, trip: ledger.Trip, usage: Usage | None, status: int, outcome: str = "ok") -> None:
    if trip.recorded or trip.candidate is None:
        return None
    trip.recorded = True
    candidate = trip.candidate
    day = time.strftime("%Y-%m-%d", time.gmtime())
    tally = TALLY.setdefault((trip.key_id, day, candidate.public_id, candidate.provider.id), Tally())
    tally.requests += 1
    if usage is not None:
        tally.tokens.add(usage)
        tally.cost_usd += ledger.cost_of(usage, candidate.row.price)
    return None


limits.Gatekeeper.admit = admit  # type: ignore[method-assign]
ledger.Recorder.finish = finish  # type: ignore[method-assign]

if __name__ == "__main__":
    raise SystemExit(cli.main())
