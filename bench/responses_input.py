"""What the native `/responses` passthrough's input check costs, beside parsing the same body.

    .venv/bin/python bench/responses_input.py                 # the agent conversation as Responses input
    .venv/bin/python bench/responses_input.py --repeat 200

The agent conversation (bench/fixtures) is turned into Responses input items (messages with typed parts,
function calls and their outputs) and encoded once. Then, interleaved round by round so that machine noise
falls on all alike, three things are timed on the same body: one `msgspec` decode (the yardstick: every
request pays it), `check_input` (what the passthrough now adds), and `validate_responses` (the pydantic
check every `/responses` request already pays). Medians, in µs and as ratios to the yardstick.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from engine.shapes.responses_request import check_input  # noqa: E402
from engine.validate import validate_responses  # noqa: E402


def responses_body(chat: dict[str, Any]) -> dict[str, Any]:
    """A chat request's conversation as Responses input items."""
    items: list[dict[str, Any]] = []
    for message in chat["messages"]:
        role, content = message["role"], message.get("content")
        if role == "tool":
            items.append({"type": "function_call_output", "call_id": message["tool_call_id"], "output": content})
            continue
        if content:
            kind = "output_text" if role == "assistant" else "input_text"
            text = content if isinstance(content, str) else "".join(p.get("text", "") for p in content)
            items.append({"type": "message", "role": role, "content": [{"type": kind, "text": text}]})
        for call in message.get("tool_calls") or []:
            function = call["function"]
            items.append(
                {
                    "type": "function_call",
                    "call_id": call["id"],
                    "name": function["name"],
                    "arguments": function["arguments"],
                }
            )
    return {"model": "openai/gpt-4.1", "input": items}


def timed(work: Callable[[], Any]) -> float:
    started = time.perf_counter()
    work()
    return (time.perf_counter() - started) * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=100, help="interleaved rounds")
    args = parser.parse_args()
    chat = json.loads((REPO / "bench/fixtures/agent_conversation.json").read_text())
    raw = msgspec.json.encode(responses_body(chat))
    body = msgspec.json.decode(raw)
    work: dict[str, Callable[[], Any]] = {
        "msgspec decode (yardstick)": lambda: msgspec.json.decode(raw),
        "check_input (native passthrough)": lambda: check_input(body),
        "validate_responses (pydantic, already paid)": lambda: validate_responses(body),
    }
    runs: dict[str, list[float]] = {name: [] for name in work}
    for _ in range(args.repeat):
        for name, step in work.items():
            runs[name].append(timed(step))
    yard = statistics.median(runs["msgspec decode (yardstick)"])
    print(f"body: {len(raw):,} bytes, {len(body['input'])} input items; {args.repeat} interleaved rounds")
    for name, times in runs.items():
        us = statistics.median(times)
        print(f"  {name:<46} {us:9.1f} µs {us / yard:7.2f}x yardstick")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
