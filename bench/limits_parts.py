"""What each part of limits and the ledger costs the event loop, in process, switched off one part at a time.

    .venv/bin/python bench/limits_parts.py                    # ~1 min
    .venv/bin/python bench/limits_parts.py --rounds 9 --requests 2000 --repeat 3

`bench/limits.py` measures limits and the ledger served, against the request path before them. This splits
that cost up. Each variant is its own process (its patches are process-wide), pinned to one CPU, running the
whole app over bench/inprocess.py's mock upstream. The bench key carries every limit (far above what the run
uses), as limits.py gives it. The figure is the event-loop thread's CPU per small request, min and median of
`--rounds` rounds. Variants run interleaved, `--repeat` times each, so machine drift hits all alike.

The ledger's SQLite insert runs on its writer thread, so it is not in these figures. In the bench that thread
shares the worker's core; `bench/limits.py` sees it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

LIMITS = {"rpm": 1e8, "tpm": 1e12, "concurrent": 1e5, "daily_usd": 1e9, "monthly_usd": 1e9}


def _before() -> None:
    import limits_before  # noqa: F401  (its import patches the gatekeeper and the recorder)


def _no_rows() -> None:
    from engine import ledger

    ledger.Recorder.add = lambda self, row: None  # type: ignore[method-assign]


def _no_admit() -> None:
    from engine.storage import base, memory

    async def admitted(self: Any, key_id: str, limits: Any, tokens: int) -> base.Admission:
        return base.ADMITTED

    memory.MemoryLimiter.admit = admitted  # type: ignore[method-assign]


def _no_settle() -> None:
    from engine.storage import memory

    memory.MemoryLimiter.settle = lambda self, *args: None  # type: ignore[method-assign]


def _no_insert() -> None:
    from engine.storage import sqlite

    sqlite.SqliteDatabase._append = lambda self, values: None  # type: ignore[method-assign]


# name -> (patches, whether the key carries limits)
VARIANTS: dict[str, tuple[tuple[Callable[[], None], ...], bool]] = {
    "before (bench/limits_before.py)": ((_before,), True),
    "limits + ledger": ((), True),
    "limits, no ledger rows": ((_no_rows,), True),
    "  ... without the limiter's admit": ((_no_rows, _no_admit), True),
    "  ... without the limiter's settle": ((_no_rows, _no_settle), True),
    "  ... without either": ((_no_rows, _no_admit, _no_settle), True),
    "no limits, no ledger rows": ((_no_rows,), False),
    "ledger, no limits on the key": ((), False),
    "ledger rows built, never inserted": ((_no_insert,), False),
}


def measure(variant: str, rounds: int, requests: int) -> list[float]:
    """In this process: the variant's µs of event-loop CPU per small request, one figure per round."""
    import uvloop
    from inprocess import Asgi, build
    from run import PUBLIC_MODEL, load_body, request_body

    from engine import heap

    patches, limited = VARIANTS[variant]
    for patch in patches:
        patch()
    with tempfile.TemporaryDirectory(prefix="engine-limits-parts-") as workdir:
        gw, app = build(Path(workdir))
        loop = uvloop.new_event_loop()
        loop.run_until_complete(gw.startup())
        heap.settle()  # as a served worker: engine/heap.py
        prefix = gw.specs.routes.gateway.key_prefix
        key = loop.run_until_complete(gw.database.create_key("bench", prefix, limits=LIMITS if limited else {}))
        client = Asgi(app, key)
        raw = request_body(load_body("small"), PUBLIC_MODEL)

        async def many(n: int) -> None:
            for _ in range(n):
                await client.post(raw)

        loop.run_until_complete(many(500))
        found = []
        for _ in range(rounds):
            began = time.thread_time()
            loop.run_until_complete(many(requests))
            found.append((time.thread_time() - began) / requests * 1e6)
        loop.run_until_complete(gw.shutdown())
        loop.close()
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=2, help="processes per variant, interleaved")
    parser.add_argument("--variant", help=argparse.SUPPRESS)  # a child process: measure this one
    args = parser.parse_args()
    if args.variant:
        print(" ".join(f"{x:.2f}" for x in measure(args.variant, args.rounds, args.requests)))
        return 0
    cpu = min(os.sched_getaffinity(0))
    results: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for _ in range(args.repeat):
        for name in VARIANTS:
            argv = [sys.executable, __file__, "--variant", name, "--rounds", str(args.rounds)]
            argv += ["--requests", str(args.requests)]
            done = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                timeout=600,
                preexec_fn=lambda: os.sched_setaffinity(0, {cpu}),
            )
            if done.returncode != 0:
                raise SystemExit(f"{name} failed:\n{done.stderr[-2000:]}")
            results[name] += [float(x) for x in done.stdout.split()[-args.rounds :]]
    print(f"event-loop CPU per small request, µs; pinned to CPU {cpu}; {args.repeat} x {args.rounds} rounds")
    print(f"  {'variant':<40} {'min':>7} {'median':>7}")
    for name, found in results.items():
        print(f"  {name:<40} {min(found):7.1f} {statistics.median(found):7.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
