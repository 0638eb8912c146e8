"""Helpers of the journey tests (tests/test_journey_*.py, tests/test_journeys.py):
a user's environment, polling with a deadline, the ledger and the server as a user
would look at them, and stopping a command the way a user does.

Each journey waits for the scheduler's every-minute cron, so each takes a few minutes;
GRAINLINE_JOURNEY_TIMEOUT (default 420 s) bounds every wait."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import httpx
import psutil
import pytest
from grainline.storage.chunks import connect
from grainline.storage.ledger import Ledger

TIMEOUT = float(os.environ.get("GRAINLINE_JOURNEY_TIMEOUT", "420"))
REPO = Path(__file__).resolve().parents[1]
PREFECT = str(Path(sys.executable).with_name("prefect"))


def user_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment of a user's shell: no API URL of the test session, a Prefect home
    of its own, telemetry off as grainline's set-up leaves it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false", **extra)
    return env


def wait_for(what: str, check: Callable[[], Any], log: Path | None = None, timeout: float = TIMEOUT, every: float = 2) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` (and the
    tail of the log) when it does not in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(every)
    tail = log.read_text(errors="replace")[-4000:] if log and log.exists() else ""
    pytest.fail(f"{what}: not within {timeout:.0f}s\n{tail}")


def ingest_runs(db: Path, status: str | None = None, source: Path | None = None) -> list[dict]:
    """Ingestion rows of the ledger; with ``source``, only that source's (an evaluation
    ingests its dataset into its own tables, and the ledger records those runs too)."""
    try:
        runs = Ledger(str(db)).runs("ingest")
    except Exception:  # noqa: BLE001 - the ledger table is being created
        return []
    return [r for r in runs if (status is None or r["status"] == status) and (source is None or r["source"] == str(source))]


def flow_runs(api: str) -> list[dict]:
    return httpx.post(f"{api}/flow_runs/filter", json={"limit": 200}, timeout=10).json()


def deployment_names(api: str) -> set[str]:
    return {d["name"] for d in httpx.post(f"{api}/deployments/filter", json={}, timeout=10).json()}


def table_rows(db: Path, table: str) -> dict[str, dict]:
    t = connect(str(db)).open_table(table)
    rows = t.to_arrow().select(["chunk_id", "doc_id", "text", "run_id", "vector"]).to_pylist()
    return {r["chunk_id"]: r for r in rows}


def stop_tree(proc: subprocess.Popen, sig: int = signal.SIGINT, timeout: float = 90) -> None:
    """Stop a command as a user does (Ctrl-C by default, which a terminal sends to the
    whole foreground process group) and check that it took every process it started
    with it: servers, runners, flow-run processes, workers. The command must lead its
    own process group (``start_new_session=True``), as a terminal's foreground job does."""
    try:
        tree = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        tree = []
    if proc.poll() is None:
        try:
            assert os.getpgid(proc.pid) == proc.pid, "start the command with start_new_session=True"
            os.killpg(proc.pid, sig)
        except ProcessLookupError:  # it ended by itself meanwhile
            pass
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
            pytest.fail(f"{proc.args[:4]} did not stop within {timeout}s of signal {sig}")
    _, alive = psutil.wait_procs(tree, timeout=30)
    left = []
    for p in alive:
        try:  # a process may end between any two of these calls; then it is not left
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                left.append(" ".join(p.cmdline()[:4]))
            p.kill()
        except psutil.NoSuchProcess:
            pass
    assert not left, f"processes left behind: {left}"
