"""Peak memory of the gateway while it moves large media: a 50 MB transcription upload and a 50 MB speech
download, through `engine serve` to the loopback fake. Prints the gateway's peak RSS (VmHWM) per phase.

The kernel's peak counter is reset before each phase (`/proc/<pid>/clear_refs`), so each figure is that
phase's own peak; "baseline" is the RSS of the idle gateway just before it. A gateway that held a body
whole would peak at least 50 MB over its baseline.

    .venv/bin/python bench/media_memory.py [--mb 50]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.servers import run_fake, run_gateway


def status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets VmHWM to the current RSS


def gateway_pid(port: int) -> int:
    """The process listening on `port` (for `engine serve`: the server process itself)."""
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1].endswith(f":{port:04X}") and fields[3] == "0A":
            inode = fields[9]
    assert inode, f"nothing listens on {port}"
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if any(os.readlink(fd).endswith(f"[{inode}]") for fd in (entry / "fd").iterdir()):
                return int(entry.name)
        except OSError:
            continue
    raise RuntimeError(f"no process owns the socket on {port}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mb", type=int, default=50, help="size of the upload and of the download")
    size = parser.parse_args().mb * 1024 * 1024
    with (
        tempfile.TemporaryDirectory() as tmp,
        run_fake("tests.fakes.openai_fake", "/v1", "--max-upload-mb", "200", "--no-record") as fake,
    ):
        env = {"OPENAI_API_KEY": "sk-bench-000000", "OPENAI_BASE_URL": fake.url}
        with run_gateway(Path(tmp), env, test_routes=False) as gateway:
            pid = gateway_pid(int(gateway.root.rsplit(":", 1)[1]))
            fake_pid = gateway_pid(int(fake.url.rsplit(":", 1)[1].split("/")[0]))
            audio = Path(tmp) / "long.wav"
            with audio.open("wb") as out:
                for _ in range(size // (1024 * 1024)):
                    out.write(os.urandom(1024 * 1024))
            auth = {"Authorization": f"Bearer {gateway.key}"}
            with httpx.Client(base_url=gateway.url, headers=auth, timeout=120) as client:
                client.get("/models").raise_for_status()  # warm: imports and first-request work done
                baseline = status_kb(pid, "VmRSS")
                reset_peak(pid)
                began = time.perf_counter()
                with audio.open("rb") as upload:
                    answer = client.post(
                        "/audio/transcriptions",
                        data={"model": "openai/whisper-1", "response_format": "json"},
                        files={"file": ("long.wav", upload, "audio/wav")},
                    )
                answer.raise_for_status()
                upload_s = time.perf_counter() - began
                upload_peak = status_kb(pid, "VmHWM")

                fake.script({"bytes": size})
                baseline_speech = status_kb(pid, "VmRSS")
                reset_peak(pid)
                fake_baseline = status_kb(fake_pid, "VmRSS")
                reset_peak(fake_pid)
                began = time.perf_counter()
                received = 0
                body = {"model": "openai/tts-1", "voice": "alloy", "input": "long", "response_format": "wav"}
                with client.stream("POST", "/audio/speech", json=body) as speech:
                    speech.raise_for_status()
                    for chunk in speech.iter_bytes():
                        received += len(chunk)
                download_s = time.perf_counter() - began
                download_peak = status_kb(pid, "VmHWM")
                fake_peak = status_kb(fake_pid, "VmHWM")
    assert received == size, f"received {received} of {size} bytes"
    mb = size / (1024 * 1024)
    print(f"gateway pid {pid}; sizes {mb:.0f} MiB")
    print(
        f"transcription upload: baseline RSS {baseline / 1024:.1f} MiB, peak {upload_peak / 1024:.1f} MiB"
        f" (+{(upload_peak - baseline) / 1024:.1f} MiB), {upload_s:.2f} s"
    )
    print(
        f"speech download:      baseline RSS {baseline_speech / 1024:.1f} MiB, peak {download_peak / 1024:.1f} MiB"
        f" (+{(download_peak - baseline_speech) / 1024:.1f} MiB), {download_s:.2f} s"
    )
    control = (fake_peak - fake_baseline) / 1024
    print(f"control: the fake, which builds the whole speech answer in memory, peaked +{control:.1f} MiB")


if __name__ == "__main__":
    main()
