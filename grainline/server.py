"""Starting and stopping a local Prefect server (SQLite) for ``grainline serve`` and
for the tests that need a real one, and the checks ``serve`` makes before it starts one.

May import: errors.
"""

from __future__ import annotations

import glob
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from grainline.errors import TerminalError

# Usage telemetry and analytics off for every Prefect server and client grainline
# starts (a user who wants them sets the variables themselves).
NO_TELEMETRY = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}


class ServeError(TerminalError, ValueError):
    """A ``grainline serve`` argument that cannot work (checked before any server starts)."""


def check_source(source: str) -> None:
    """A folder, a file, or a glob whose fixed part exists (an object-store prefix is
    checked by the CLI, which asks the store)."""
    if source.lower().startswith("s3://"):
        return
    if glob.has_magic(source):
        base = source.split("*")[0].split("?")[0].split("[")[0]
        base_dir = Path(base if base.endswith("/") else os.path.dirname(base) or ".")
        if not base_dir.expanduser().exists():
            raise ServeError(f"--source {source!r}: folder {str(base_dir)!r} does not exist")
        return
    if not Path(source).expanduser().exists():
        raise ServeError(f"--source {source!r} does not exist: give a folder, a file or a glob of documents")


def check_port_free(port: int, host: str = "127.0.0.1") -> None:
    """The port a local server is to listen on must be free."""
    if not 1 <= port <= 65535:
        raise ServeError(f"--port {port}: a port is a number from 1 to 65535")
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError as exc:
            raise ServeError(
                f"--port {port} is already in use on {host} ({exc.strerror}): choose another --port, "
                f"or pass --api-url http://{host}:{port}/api to use the Prefect server running there"
            ) from None


def check_api_url(api_url: str, timeout: float = 5) -> None:
    """``--api-url`` must be an http(s) URL of a Prefect API that answers /health."""
    import httpx

    if not api_url.startswith(("http://", "https://")):
        raise ServeError(f"--api-url {api_url!r}: give the server's API URL, e.g. http://127.0.0.1:4200/api")
    try:
        r = httpx.get(f"{api_url.rstrip('/')}/health", timeout=timeout)
    except httpx.HTTPError as exc:
        raise ServeError(f"--api-url {api_url!r}: no Prefect server answers there ({type(exc).__name__}: {exc})") from None
    if r.status_code != 200:
        raise ServeError(f"--api-url {api_url!r}: {api_url.rstrip('/')}/health answered HTTP {r.status_code}, "
                         "not a Prefect API (the URL ends in /api)")


@contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt for the block, so a ``finally`` that stops a
    child server runs when systemd or a test stops the process (the default action of
    SIGTERM would kill the process and leave the server running)."""
    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _prefect_command() -> list[str]:
    """The Prefect CLI of the Python running grainline: its own script where the
    environment has one, else the same interpreter's module (an environment whose
    packages come from elsewhere has no script beside its python, and a `prefect` on
    PATH may belong to another Prefect)."""
    exe = Path(sys.executable).with_name("prefect")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "prefect"]


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
    url = f"http://{host}:{port}/api"
    # PREFECT_UI_API_URL: without it the UI of a server on another port than 4200 asks
    # http://127.0.0.1:4200/api for everything and shows nothing of its own server.
    env.update(NO_TELEMETRY, PREFECT_HOME=str(home), PREFECT_UI_API_URL=url,
               PREFECT_UI_ENABLED=env.get("PREFECT_UI_ENABLED", "true"))
    log_path = home / "server.log"
    log = open(log_path, "ab")
    proc = subprocess.Popen(
        [*_prefect_command(), "server", "start", "--host", host, "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        start_new_session=True,  # its own process group, so stop() reaches its children
    )
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


# --- The local server grainline keeps between commands -------------------------------
#
# Without a Prefect server, every flow run starts a temporary one (8-20 s) and its runs
# vanish with it. grainline instead starts one local server the first time a command
# needs it, leaves it running for later commands (so they connect at once and every run
# shows up in one UI), and stops it on `grainline server stop`.

def grainline_home() -> Path:
    """``$GRAINLINE_HOME`` or ``~/.grainline``: the kept server's state and database."""
    return Path(os.environ.get("GRAINLINE_HOME") or Path.home() / ".grainline")


def _state_path() -> Path:
    return grainline_home() / "server.json"


def _healthy(api_url: str, timeout: float = 2) -> bool:
    import httpx

    try:
        return httpx.get(f"{api_url}/health", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def kept_server() -> dict | None:
    """The kept server's state ({url, pid, home, log}) when it is running, else None."""
    import json

    try:
        state = json.loads(_state_path().read_text())
    except (OSError, ValueError):
        return None
    try:
        os.kill(int(state["pid"]), 0)
    except (OSError, KeyError, ValueError):
        return None
    return state if _healthy(state["url"]) else None


def start_kept_server(port: int | None = None) -> dict:
    """Start the kept server (detached: it outlives this process and its terminal) unless
    it runs already; returns its state. Port 4200 when free, else any free port."""
    import json

    from filelock import FileLock

    home = grainline_home()
    home.mkdir(parents=True, exist_ok=True)
    # Two commands started at once must not start two servers.
    with FileLock(str(home / "server.lock"), timeout=300):
        state = kept_server()
        if state is not None:
            return state
        if port is None:
            try:
                check_port_free(4200)
                port = 4200
            except ServeError:
                port = free_port()
        server = start_local_server(home / "prefect", port=port)
        state = {"url": server.url, "pid": server.process.pid, "home": str(home / "prefect"), "log": str(server.log_path)}
        tmp = _state_path().with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, _state_path())
        return state


def stop_kept_server(timeout: float = 30) -> dict | None:
    """Stop the kept server; returns the state it had, or None when none was running."""
    state = kept_server()
    try:
        _state_path().unlink()
    except FileNotFoundError:
        pass
    if state is None:
        return None
    pid = int(state["pid"])
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return state
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return state
        time.sleep(0.2)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return state


def use_prefect_server(announce: "callable | None" = None) -> str | None:
    """Point this process's Prefect client at a server before a flow runs, and return
    its API URL: ``PREFECT_API_URL`` when set, else the kept local server (started on
    first use). ``GRAINLINE_PREFECT_SERVER=temporary`` keeps Prefect's own behaviour (a
    temporary server per command); then None is returned."""
    url = os.environ.get("PREFECT_API_URL")
    if url:
        if not _healthy(url, timeout=5):
            raise ServeError(f"PREFECT_API_URL={url}: no Prefect server answers there; start it, or unset "
                             "PREFECT_API_URL to use grainline's local server")
        return url
    if os.environ.get("GRAINLINE_PREFECT_SERVER", "kept") == "temporary":
        return None
    state = kept_server()
    if state is None:
        if announce:
            announce("starting grainline's local Prefect server (once; later commands reuse it; "
                     "`grainline server stop` stops it) ...")
        state = start_kept_server()
        if announce:
            announce(f"Prefect UI: {state['url'].removesuffix('/api')}")
    os.environ["PREFECT_API_URL"] = state["url"]
    os.environ.update(NO_TELEMETRY)
    import sys

    if "prefect" in sys.modules:  # settings were read at import: update them too
        from prefect.settings import PREFECT_API_URL, temporary_settings

        temporary_settings({PREFECT_API_URL: state["url"]}).__enter__()
    return state["url"]
