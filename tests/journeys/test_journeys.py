"""Journeys' bad input and telemetry: `grainline serve` refuses bad arguments before
starting anything, and no server or client grainline starts phones home."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import httpx
import psutil
import pytest

from grainline.server import free_port, start_local_server

from tests.conftest import write_files
from tests.journey import user_env

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("args, says", [
    (["--ingest-cron", "61 * * * *"], "invalid cron expression '61 * * * *'"),
    (["--api-url", "http://127.0.0.1:{dead}/api"], "no Prefect server answers there"),
    (["--port", "{busy}"], "is already in use"),
    (["--source", "{tmp}/nowhere"], "does not exist"),
])
def test_serve_rejects_bad_arguments_before_starting_anything(tmp_path, args, says):
    import socket

    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    fill = {"dead": free_port(), "busy": busy.getsockname()[1], "tmp": tmp_path}
    args = [a.format(**fill) for a in args]
    src = write_files(tmp_path / "src", {"a.txt": "Some text."})
    cmd = [sys.executable, "-m", "grainline.cli", "serve", "--source", str(src), "--db", str(tmp_path / "db"),
           "--prefect-home", str(tmp_path / "home"), "--port", str(free_port())] + args
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, env=user_env(tmp_path / "home"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    children: dict[int, str] = {}
    while proc.poll() is None and time.monotonic() - t0 < 60:
        try:
            for c in psutil.Process(proc.pid).children(recursive=True):
                try:
                    children[c.pid] = " ".join(c.cmdline())
                except psutil.Error:
                    children.setdefault(c.pid, "?")
        except psutil.NoSuchProcess:
            break
        time.sleep(0.05)
    out, err = proc.communicate(timeout=60)
    busy.close()
    assert proc.returncode == 2, (out, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and says in lines[0] and "Traceback" not in err, err
    # No server was started. A server is `prefect server start` or its uvicorn; a child
    # caught between fork and exec still carries grainline's own command line (whose
    # `--prefect-home` says "prefect"), and short-lived helpers of imports are no server.
    servers = {pid: c for pid, c in children.items() if "server start" in c or "uvicorn" in c}
    assert "starting a local Prefect server" not in out and not servers, (out, children)
    assert not (tmp_path / "home" / "prefect.db").exists()


def test_server_and_client_telemetry_is_off(tmp_path):
    """The servers grainline starts are told not to send usage analytics."""
    server = start_local_server(tmp_path / "home")
    try:
        pid = server.process.pid
        env = psutil.Process(pid).environ()
        assert env.get("PREFECT_SERVER_ANALYTICS_ENABLED") == "false" and env.get("DO_NOT_TRACK") == "1"
        settings = httpx.get(f"{server.url}/admin/settings", timeout=10).json()
        assert settings["server"]["analytics_enabled"] is False, json.dumps(settings)[:500]
    finally:
        server.stop()
    assert "telemetry" not in server.log_path.read_text().lower()
