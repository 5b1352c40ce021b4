"""`engine usage`: the ledger's daily aggregates grouped the way the operator asks, as a table or JSON."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from engine.storage.base import DailyUsage, add_units

GROUPS = {"key": "key", "model": "public_model", "provider": "provider", "day": "day", "operation": "operation"}
NUMBERS = (
    "requests",
    "errors",
    "prompt_tokens",
    "completion_tokens",
    "reasoning_tokens",
    "cached_tokens",
    "cache_write_tokens",
)


def grouped(items: Iterable[DailyUsage], by: Sequence[str], key_names: Mapping[str, str]) -> list[dict[str, Any]]:
    """One entry per distinct value of the `by` columns, with the sums, ordered by those columns."""
    out: dict[tuple[str, ...], dict[str, Any]] = {}
    for item in items:
        values = {name: _value(item, name, key_names) for name in by}
        entry = out.setdefault(
            tuple(values.values()), {**values, **dict.fromkeys(NUMBERS, 0), "units": {}, "cost_usd": 0.0}
        )
        for number in NUMBERS:
            entry[number] += getattr(item, number)
        add_units(entry["units"], item.units)
        entry["cost_usd"] += item.cost_usd
    for entry in out.values():
        entry["cost_usd"] = round(entry["cost_usd"], 9)
    return [out[k] for k in sorted(out)]


def _value(item: DailyUsage, name: str, key_names: Mapping[str, str]) -> str:
    if name == "key":
        return key_names.get(item.key_id, item.key_id)
    return getattr(item, GROUPS[name]) or "-"


def table(entries: list[dict[str, Any]], by: Sequence[str]) -> str:
    header = [*(name.upper() for name in by), "REQUESTS", "ERRORS", "PROMPT", "COMPLETION", "REASONING", "CACHED"]
    header += ["CACHE_WRITE", "UNITS", "COST_USD"]
    rows = [
        [
            *(str(e[name]) for name in by),
            *(str(e[n]) for n in NUMBERS),
            ",".join(f"{unit}={amount:g}" for unit, amount in sorted(e["units"].items())) or "-",
            f"{e['cost_usd']:.6f}",
        ]
        for e in entries
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    numeric = len(by)
    lines = [
        "  ".join(
            cell.rjust(w) if i >= numeric else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in [header, *rows]
    ]
    return "\n".join(line.rstrip() for line in lines)
