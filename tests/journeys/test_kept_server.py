"""No per-command server start-up: the first command that runs a flow starts grainline's
local Prefect server and leaves it running; later commands from new terminals use it at
once, and their runs can be found there afterwards."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx
import psutil
import pytest

from tests.conftest import write_files

pytestmark = pytest.mark.slow


def test_commands_share_one_kept_server_and_its_runs_stay(tmp_path):
    src = write_files(tmp_path / "src", {"a.txt": "A short note about rivers.", "b.txt": "Another note, on comets."})
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env.update(GRAINLINE_HOME=str(tmp_path / "home"))

    def grainline(*args: str) -> tuple[subprocess.CompletedProcess, float]:
        t0 = time.monotonic()
        out = subprocess.run([sys.executable, "-m", "grainline.cli", *args], env=env, capture_output=True, text=True,
                             timeout=300)
        return out, time.monotonic() - t0

    db = str(tmp_path / "db")
    first, t_first = grainline("ingest", str(src / "a.txt"), "--db", db, "--device", "cpu", "--no-progress")
    assert first.returncode == 0, first.stderr[-3000:]
    assert "starting grainline's local Prefect server" in first.stderr
    assert "Starting temporary server" not in first.stdout + first.stderr
    second, t_second = grainline("ingest", str(src / "b.txt"), "--db", db, "--device", "cpu", "--no-progress")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "starting grainline's local Prefect server" not in second.stderr
    assert "Starting temporary server" not in second.stdout + second.stderr
    print(f"\none-file ingest: first (starts the server) {t_first:.1f}s, next {t_second:.1f}s")

    status, _ = grainline("server", "status")
    assert status.returncode == 0 and "running" in status.stdout, status
    api = status.stdout.split("API ")[1].split(",")[0]
    runs = httpx.post(f"{api}/flow_runs/filter", json={}, timeout=10).json()
    assert sorted(r["state_type"] for r in runs) == ["COMPLETED", "COMPLETED"]
    pid = int(status.stdout.split("pid ")[1].split(",")[0])

    stop, _ = grainline("server", "stop")
    assert stop.returncode == 0 and "stopped" in stop.stdout
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    again, _ = grainline("server", "status")
    assert again.returncode == 1


def test_an_unreachable_prefect_api_url_is_one_line(tmp_path):
    from grainline.server import free_port

    src = write_files(tmp_path / "src", {"a.txt": "A short note."})
    env = dict(os.environ, PREFECT_API_URL=f"http://127.0.0.1:{free_port()}/api")
    out = subprocess.run([sys.executable, "-m", "grainline.cli", "ingest", str(src), "--db", str(tmp_path / "db")],
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "no Prefect server answers there" in out.stderr, out
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr
