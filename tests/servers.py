"""Real processes on loopback for end-to-end tests: the upstream fake and the gateway (`engine serve`)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
ENGINE = str(Path(sys.executable).parent / "engine")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            out = process.stdout.read().decode() if process.stdout else ""
            raise RuntimeError(f"process exited with {process.returncode}:\n{out}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class Fake:
    url: str  # base URL as a provider spec wants it (…/v1)
    control: httpx.Client

    def script(self, *steps: dict) -> None:
        self.control.post("/_fake/script", json=list(steps)).raise_for_status()

    def requests(self) -> list[dict]:
        return self.control.get("/_fake/requests").json()

    def last_body(self) -> dict:
        return self.requests()[-1]["body"]

    def aborted(self) -> int:
        return int(self.control.get("/_fake/stats").json()["aborted"])

    def hung_up_at(self) -> list[float]:
        """When (time.time()) the gateway closed each `hang`ed request's connection."""
        return [float(t) for t in self.control.get("/_fake/stats").json()["hung_up_at"]]

    def reset(self) -> None:
        self.control.delete("/_fake/requests").raise_for_status()


@contextlib.contextmanager
def run_fake(module: str = "tests.fakes.openai_fake", base_path: str = "/v1", *args: str) -> Iterator[Fake]:
    """A fake upstream (`python -m <module>`) on a free port; its URL ends in `base_path`."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", module, "--port", str(port), *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(port, process)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as control:
            yield Fake(f"http://127.0.0.1:{port}{base_path}", control)
    finally:
        stop(process)


@dataclass
class Gateway:
    url: str  # the public base URL, …/external/v1
    root: str
    key: str
    env: dict[str, str]
    log: Path
    process: subprocess.Popen[bytes]

    def rss_mb(self) -> float:
        """The gateway process's resident memory now, in MiB (Linux)."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")

    def fds(self) -> int:
        return len(list(Path(f"/proc/{self.process.pid}/fd").iterdir()))

    def engine(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([ENGINE, *args], env=self.env, capture_output=True, text=True, timeout=60)


# Many tests share one gateway, and their scripted failures would add up to open a provider's circuit for
# the tests after them; test_e2e_resilience.py starts its own gateway to show breakers.
NO_BREAKER = "\n[breaker]\nfailures = 1000\n"

TRANSCRIPTION_LIMIT_MB = 3
# What OpenCode's `auth login` runs on the test gateway: it prints the key the test hands it in this variable.
OPENCODE_KEY_ENV = "COMPOSE_TEST_KEY"
TEST_ROUTES = {
    "flush_seconds = 1.0": "flush_seconds = 0.2",
    "max_body_mb = 64  # audio": f"max_body_mb = {TRANSCRIPTION_LIMIT_MB}  # audio",
}
TEST_AUTH_COMMAND = f'auth_command = ["sh", "-c", "printf %s \\"${OPENCODE_KEY_ENV}\\""]'


@contextlib.contextmanager
def run_gateway(
    tmp: Path,
    provider_env: dict[str, str],
    key_name: str = "e2e",
    breaker: str = NO_BREAKER,
    extra_providers: dict[str, str] | None = None,
    test_routes: bool = True,
    routes_overrides: dict[str, str] | None = None,
) -> Iterator[Gateway]:
    """`engine serve` on a free port with the shipped specs plus the test-only providers, and a key named
    `key_name` (`provider_env` may also name the database: ENGINE_DB, ENGINE_REDIS). `breaker` is appended
    to routes.toml; `extra_providers` (file name → TOML text) are written beside the shipped specs;
    `test_routes=False` keeps routes.toml's other settings as shipped (benchmarks); `routes_overrides`
    (shipped line → tested line) changes routes.toml settings for one gateway."""
    specs = tmp / "specs"
    shutil.copytree(REPO / "specs", specs)
    for extra in (REPO / "tests" / "fixtures" / "providers").glob("*.toml"):
        shutil.copy(extra, specs / "providers" / extra.name)
    for name, text in (extra_providers or {}).items():
        (specs / "providers" / name).write_text(text)
    routes = (specs / "routes.toml").read_text()
    # write usage quickly, so tests can read it back; a small upload limit, so the 413 test sends little;
    # an OpenCode auth command that prints the test's key
    replacements = (TEST_ROUTES if test_routes else {}) | (routes_overrides or {})
    for shipped, tested in replacements.items():
        assert shipped in routes, f"routes.toml no longer has {shipped!r}"
        routes = routes.replace(shipped, tested, 1)
    if test_routes:
        routes, replaced = re.subn(r"(?m)^auth_command = .*$", lambda _: TEST_AUTH_COMMAND, routes)
        assert replaced == 1, "routes.toml no longer has [opencode] auth_command"
    # a route that asks for receipts, as an operator's internal surface would (the external ones never do)
    routes += '\n[[routes]]\nmethod = "POST"\npath = "/internal/v1/chat/completions"\n'
    routes += 'operation = "chat.completions"\nreceipt = true\n' + breaker
    (specs / "routes.toml").write_text(routes)
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_BASE_URL"))}
    env |= {"ENGINE_SPECS": str(specs), "ENGINE_DB": str(tmp / "engine.sqlite3"), **provider_env}
    key = (
        subprocess.run(
            [ENGINE, "keys", "create", "--name", key_name], env=env, capture_output=True, text=True, check=True
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    port = free_port()
    log = tmp / "gateway.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [ENGINE, "serve", "--port", str(port)], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        wait_for_port(port, process)
        yield Gateway(f"http://127.0.0.1:{port}/external/v1", f"http://127.0.0.1:{port}", key, env, log, process)
    finally:
        stop(process)
