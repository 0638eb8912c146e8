"""Starting and stopping a local Prefect server (SQLite) for ``grainline serve`` and
for the tests that need a real one."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _prefect_exe() -> str:
    exe = Path(sys.executable).with_name("prefect")
    return str(exe) if exe.exists() else (shutil.which("prefect") or "prefect")


@dataclass
class LocalServer:
    """A ``prefect server start`` child process on a loopback port."""

    process: subprocess.Popen
    url: str  # the API URL, .../api
    log_path: Path

    @property
    def ui_url(self) -> str:
        return self.url.removesuffix("/api")

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM the server's process group, then SIGKILL what is left."""
        if self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)


def start_local_server(
    prefect_home: str | Path, port: int | None = None, host: str = "127.0.0.1", timeout: float = 120
) -> LocalServer:
    """Start a Prefect server with its SQLite database under ``prefect_home`` and wait
    until /api/health answers. Raises with the server's log when it does not."""
    import httpx

    port = port or free_port()
    home = Path(prefect_home)
    home.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.pop("PREFECT_API_URL", None)
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_UI_ENABLED=env.get("PREFECT_UI_ENABLED", "true"))
    log_path = home / "server.log"
    log = open(log_path, "ab")
    proc = subprocess.Popen(
        [_prefect_exe(), "server", "start", "--host", host, "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        start_new_session=True,  # its own process group, so stop() reaches its children
    )
    url = f"http://{host}:{port}/api"
    server = LocalServer(proc, url, log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"prefect server exited with {proc.returncode}; log: {log_path}\n{log_path.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    server.stop()
    raise TimeoutError(f"prefect server did not answer {url}/health within {timeout:.0f}s; log: {log_path}")
