"""Real PostgreSQL and Redis servers for the tests, started once per session on loopback in temporary
directories, and stopped at its end. Where one cannot be started (binaries missing, no unprivileged user
to run PostgreSQL as root), the tests that need it are skipped with the reason.

PostgreSQL refuses to run as root, so as root the server runs as the `postgres` user (or `nobody`),
owning its temporary data directory.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.servers import free_port, wait_for_port


class Unavailable(Exception):
    """A server that cannot be started here; the message says why."""


def _binary(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    if found is None:
        raise Unavailable(f"`{name}` not found on PATH or under /usr/lib/postgresql/*/bin (apt-get install postgresql)")
    return found


def _run_as() -> tuple[list[str], int | None, int | None]:
    """The command prefix, uid and gid to run PostgreSQL with: ourselves, or an unprivileged user as root."""
    if os.geteuid() != 0:
        return [], None, None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            user = pwd.getpwnam(name)
            runuser = shutil.which("runuser")
            if runuser is None:
                raise Unavailable("running as root and `runuser` is missing: cannot start PostgreSQL unprivileged")
            return [runuser, "-u", name, "--"], user.pw_uid, user.pw_gid
    raise Unavailable("running as root with no `postgres` or `nobody` user to run PostgreSQL as")


@dataclass
class Postgres:
    root: Path
    port: int
    prefix: list[str]
    pg_ctl: str

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://engine@127.0.0.1:{self.port}/{database}"


@contextlib.contextmanager
def run_postgres() -> Iterator[Postgres]:
    initdb, pg_ctl = _binary("initdb"), _binary("pg_ctl")
    _binary("postgres")
    prefix, uid, gid = _run_as()
    root = Path(tempfile.mkdtemp(prefix="engine-pg-"))
    data = root / "data"
    if uid is not None and gid is not None:
        os.chown(root, uid, gid)
    port = free_port()
    try:
        done = subprocess.run(
            [*prefix, initdb, "-D", str(data), "-U", "engine", "--auth=trust", "-E", "UTF8", "--no-sync"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode != 0:
            raise Unavailable(f"initdb failed: {done.stderr.strip()[-500:]}")
        options = f"-p {port} -h 127.0.0.1 -k {root} -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        started = subprocess.run(
            [*prefix, pg_ctl, "-D", str(data), "-o", options, "-l", str(root / "log"), "-w", "-t", "60", "start"],
            capture_output=True,
            text=True,
            timeout=90,
        )
        if started.returncode != 0:
            log = (root / "log").read_text() if (root / "log").exists() else started.stderr
            raise Unavailable(f"PostgreSQL did not start: {log.strip()[-500:]}")
        try:
            yield Postgres(root, port, prefix, pg_ctl)
        finally:
            subprocess.run(
                [*prefix, pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"], capture_output=True, timeout=60
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class Redis:
    port: int

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"


@contextlib.contextmanager
def run_redis() -> Iterator[Redis]:
    server = shutil.which("redis-server")  # what .ci/run installs (Debian's redis-server)
    if server is None:
        raise Unavailable("`redis-server` not found on PATH (apt-get install redis-server)")
    root = Path(tempfile.mkdtemp(prefix="engine-redis-"))
    port = free_port()
    command = [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    process = subprocess.Popen(
        [*command, "--dir", str(root)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=root
    )
    try:
        try:
            wait_for_port(port, process, timeout=30)
        except RuntimeError as exc:
            raise Unavailable(f"redis-server did not start: {exc}") from None
        yield Redis(port)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(root, ignore_errors=True)
