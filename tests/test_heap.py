"""A serving worker tunes its garbage collector once started (engine/heap.py): its start-up heap frozen out
of every collection, young collections less often. Applications built for tests leave the collector alone."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# In a process of its own: freezing is process-wide, and would otherwise apply to the test run itself.
CHILD = """
import gc, os, sys
from litestar.testing import TestClient
from engine.app import build_app
from engine.gateway import Gateway
from engine.heap import YOUNG_THRESHOLD

server = sys.argv[1] == "server"
from pathlib import Path
gw = Gateway.build(Path(sys.argv[2]) / "specs", "sqlite:///" + os.path.join(sys.argv[3], "db.sqlite3"))
with TestClient(build_app(gw, server=server)):
    print(gc.get_freeze_count() > 0, gc.get_threshold()[0] == YOUNG_THRESHOLD)
"""


def started(kind: str, tmp_path: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, kind, str(REPO), str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


def test_a_serving_worker_freezes_its_start_up_heap_and_collects_young_objects_less_often(tmp_path: Path) -> None:
    assert started("server", tmp_path) == "True True"


def test_an_application_built_for_tests_leaves_the_collector_as_it_was(tmp_path: Path) -> None:
    assert started("test", tmp_path) == "False False"
