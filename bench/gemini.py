"""What the Gemini codec adds: one interleaved run, the gateway in front of the Gemini fake next to the gateway
in front of the OpenAI fake, each against its fake reached directly.

    .venv/bin/python bench/gemini.py               # ~1 minute on a quiet machine, prints the numbers
    .venv/bin/python bench/gemini.py --rounds 30   # steadier medians

Two scenarios, non-streaming and at concurrency 1: a one-line prompt, and a tool turn (an assistant tool call
plus its result; over Gemini its id carries a thought signature, so the carrier is unpacked and the signature
restored). Targets are interleaved round by round (bench/run.py's `sequential_phase`), so drift of a shared
machine hits all of them alike; a figure is the median over rounds of each round's p50. Added latency is
gateway minus direct for the same upstream; the headline is the ratio of Gemini's added latency to the OpenAI
wire's, plus the gateway's own time per request (its `x-compose-overhead-ms` header), which excludes the
fakes. Loopback only; every process is stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from run import HOST, REPO, Processes, Sequential, Target, free_port, sequential_phase, wait_until_listening

from engine import carry
from engine.wires.gemini import pack_state

OPENAI_KEY = "sk-bench-not-a-real-key"
GEMINI_KEY = "gemini-bench-key"
PROMPT = [{"role": "user", "content": "Say hello."}]
SIGNATURE = "skip_thought_signature_validator"  # the fake accepts it without having issued it


def tool_turn(call_id: str) -> list[dict[str, Any]]:
    return [
        {"role": "user", "content": "Weather in Oslo?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": call_id, "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}}
            ],
        },
        {"role": "tool", "tool_call_id": call_id, "content": '{"temp_c": 4}'},
    ]


TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


@dataclass
class RawTarget(Target):
    """A target whose body is sent exactly as given (the Gemini fake refuses a `model` field)."""

    raw: bytes = b""

    def body_bytes(self, stream: bool = False) -> bytes:
        return self.raw


def targets_for(scenario: str, ports: dict[str, int], key: str, pid: int) -> list[Target]:
    json_headers = {"Content-Type": "application/json", "Accept": "application/json"}
    gateway = {**json_headers, "Authorization": f"Bearer {key}"}
    if scenario == "prompt":
        openai_chat: dict[str, Any] = {"messages": PROMPT}
        gemini_chat: dict[str, Any] = {"messages": PROMPT}
        gemini_native: dict[str, Any] = {"contents": [{"role": "user", "parts": [{"text": "Say hello."}]}]}
    else:
        packed = carry.pack("call_bench_1", "gemini", pack_state(SIGNATURE, False))
        openai_chat = {"messages": tool_turn("call_bench_1"), "tools": [TOOL]}
        gemini_chat = {"messages": tool_turn(packed), "tools": [TOOL]}
        gemini_native = {
            "contents": [
                {"role": "user", "parts": [{"text": "Weather in Oslo?"}]},
                {
                    "role": "model",
                    "parts": [
                        {
                            "functionCall": {"name": "get_weather", "args": {"city": "Oslo"}},
                            "thoughtSignature": SIGNATURE,
                        }
                    ],
                },
                {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"temp_c": 4}}}]},
            ],
            "tools": [
                {
                    "functionDeclarations": [
                        {"name": "get_weather", "parametersJsonSchema": TOOL["function"]["parameters"]}
                    ]
                }
            ],
        }

    def chat(name: str, model: str, body: dict[str, Any]) -> RawTarget:
        raw = json.dumps({"model": model, **body}, separators=(",", ":")).encode()
        return RawTarget(name, ports["gateway"], "/external/v1/chat/completions", model, gateway, pid=pid, raw=raw)

    return [
        RawTarget(
            "direct-openai",
            ports["openai"],
            "/v1/chat/completions",
            "gpt-4.1",
            {**json_headers, "Authorization": f"Bearer {OPENAI_KEY}"},
            raw=json.dumps({"model": "gpt-4.1", **openai_chat}, separators=(",", ":")).encode(),
        ),
        chat("gateway-openai", "openai/gpt-4.1", openai_chat),
        RawTarget(
            "direct-gemini",
            ports["gemini"],
            "/v1beta/models/gemini-2.5-flash:generateContent",
            "gemini-2.5-flash",
            {**json_headers, "x-goog-api-key": GEMINI_KEY},
            raw=json.dumps(gemini_native, separators=(",", ":")).encode(),
        ),
        chat("gateway-gemini", "google/gemini-2.5-flash", gemini_chat),
    ]


def report(scenario: str, results: dict[str, Sequential]) -> dict[str, Any]:
    p50 = {name: statistics.median(r.p50) * 1000 for name, r in results.items()}
    own = {name: statistics.median(r.overhead_ms) for name, r in results.items() if r.overhead_ms}
    added_openai = p50["gateway-openai"] - p50["direct-openai"]
    added_gemini = p50["gateway-gemini"] - p50["direct-gemini"]
    found = {
        "scenario": scenario,
        "p50_ms": {k: round(v, 3) for k, v in p50.items()},
        "added_p50_ms": {"openai_wire": round(added_openai, 3), "gemini": round(added_gemini, 3)},
        "added_ratio_gemini_over_openai": round(added_gemini / added_openai, 2) if added_openai > 0 else None,
        "gateway_own_ms_p50": {k: round(v, 3) for k, v in own.items()},
        "own_ratio_gemini_over_openai": round(own["gateway-gemini"] / own["gateway-openai"], 2),
    }
    print(f"\n{scenario}: p50 ms {found['p50_ms']}")
    print(
        f"  added by the gateway (p50): OpenAI wire {added_openai:.3f} ms, Gemini {added_gemini:.3f} ms"
        f"  -> ratio {found['added_ratio_gemini_over_openai']}"
    )
    print(
        f"  gateway's own time (x-compose-overhead-ms p50): {found['gateway_own_ms_p50']}"
        f"  -> ratio {found['own_ratio_gemini_over_openai']}"
    )
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--requests", type=int, default=40, help="requests per target per round")
    args = parser.parse_args()
    procs = Processes()
    with tempfile.TemporaryDirectory(prefix="bench-gemini-") as tmp:
        workdir = Path(tmp)
        try:
            env = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_BASE_URL"))}
            env |= {"ENGINE_DB": str(workdir / "engine.sqlite3"), "ENGINE_SPECS": str(REPO / "specs")}
            engine = str(Path(sys.executable).parent / "engine")
            created = subprocess.run(
                [engine, "keys", "create", "--name", "bench"], env=env, capture_output=True, timeout=60, check=True
            )
            key = created.stdout.decode().strip().splitlines()[-1]
            ports = {"openai": free_port(), "gemini": free_port(), "gateway": free_port()}
            fakes = {
                "openai": [sys.executable, "-m", "tests.fakes.openai_fake", "--port", str(ports["openai"])],
                "gemini": [
                    sys.executable,
                    "-m",
                    "tests.fakes.gemini_fake",
                    "--port",
                    str(ports["gemini"]),
                    "--key",
                    GEMINI_KEY,
                ],
            }
            for name, argv in fakes.items():
                log = workdir / f"{name}.log"
                wait_until_listening(
                    ports[name], procs.start([*argv, "--host", HOST, "--no-record"], env, log, None), log
                )
            env |= {
                "OPENAI_API_KEY": OPENAI_KEY,
                "OPENAI_BASE_URL": f"http://{HOST}:{ports['openai']}/v1",
                "GEMINI_API_KEY": GEMINI_KEY,
                "GEMINI_BASE_URL": f"http://{HOST}:{ports['gemini']}/v1beta",
            }
            log = workdir / "gateway.log"
            serve = [engine, "serve", "--host", HOST, "--port", str(ports["gateway"]), "--workers", "1"]
            gateway = procs.start(serve, env, log, None)
            wait_until_listening(ports["gateway"], gateway, log)
            print(f"interleaved: {args.rounds} rounds x {args.requests} requests per target, concurrency 1, no pinning")
            found = [
                report(
                    scenario,
                    sequential_phase(targets_for(scenario, ports, key, gateway.pid), args.rounds, args.requests, False),
                )
                for scenario in ("prompt", "tool_turn")
            ]
            print("\n" + json.dumps(found, indent=2))
        finally:
            procs.stop_all()


if __name__ == "__main__":
    main()
