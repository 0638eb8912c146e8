"""Journeys as a user runs them: `grainline serve` started from the command line with
its own Prefect server, a `prefect deploy` + process worker against `prefect server
start`, and `grainline ingest` killed at seeded moments. Nothing here triggers a run by
hand: every run below was created by Prefect's scheduler (or a deployment trigger).

Each journey waits for the scheduler's every-minute cron, so each takes a few minutes;
GRAINLINE_JOURNEY_TIMEOUT (default 420 s) bounds every wait."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import httpx
import psutil
import pytest

from grainline.server import free_port, start_local_server
from grainline.storage.chunks import ChunkStore, connect, open_table_if_exists
from grainline.storage.ledger import Ledger
from grainline.storage.parquet import default_export_dir, exported_version, read_export

from .conftest import write_files
from .test_evaluate import write_spans_fixture
from .test_ingest import CORPUS

pytestmark = pytest.mark.slow

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
    """Stop a command as a user does (Ctrl-C by default) and check that it took every
    process it started with it: servers, runners, flow-run processes, workers."""
    try:
        tree = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        tree = []
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
            pytest.fail(f"{proc.args[:4]} did not stop within {timeout}s of signal {sig}")
    _, alive = psutil.wait_procs(tree, timeout=30)
    left = [" ".join(p.cmdline()[:4]) for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    for p in alive:
        p.kill()
    assert not left, f"processes left behind: {left}"


@pytest.mark.xdist_group("journey-serve")
def test_serve_runs_schedules_by_itself(tmp_path):
    """`grainline serve` with an every-minute cron: the scheduler creates and runs the
    ingestion by itself; an edited file is picked up by the next scheduled run (only
    that document changes); a run killed mid-way is followed by a scheduled run that
    completes; the evaluation fires after each ingestion; the UI talks to this server;
    Ctrl-C stops everything."""
    src = write_files(tmp_path / "src", CORPUS)
    spans = write_spans_fixture(tmp_path / "spans")
    db, home, log = tmp_path / "db", tmp_path / "prefect-home", tmp_path / "serve.log"
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    proc = subprocess.Popen(
        [sys.executable, "-m", "grainline.cli", "serve", "--source", str(src), "--db", str(db), "-s", "paragraph",
         "--ingest-cron", "* * * * *", "--eval-dataset", f"spans:{spans}", "--eval-after-ingest",
         "--eval-cron", "0 0 1 1 *", "--reports", str(tmp_path / "reports"), "--port", str(port),
         "--prefect-home", str(home)],
        env=user_env(home), cwd=tmp_path, stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        t0 = time.monotonic()
        first = wait_for("a scheduled ingestion completed", lambda: ingest_runs(db, "completed", src), log)[0]
        print(f"\nfirst scheduled ingestion completed {time.monotonic() - t0:.0f}s after `grainline serve` started")
        # The deployments are on the server serve started (not on a temporary one), and
        # every run there was created by the scheduler or the trigger, none by hand.
        assert {"scheduled-ingest", "scheduled-eval"} <= deployment_names(api)
        runs = flow_runs(api)
        assert runs and all(r["auto_scheduled"] or r["created_by"] and r["created_by"]["type"] == "AUTOMATION"
                            for r in runs if r["state_type"] not in ("SCHEDULED",)), runs
        # The UI asks its own server, whatever the port.
        assert httpx.get(f"http://127.0.0.1:{port}/ui-settings", timeout=10).json()["api_url"] == api

        assert first["docs_added"] == len(CORPUS) and first["docs_failed"] == 0
        table = first["table_name"]
        store = ChunkStore(str(db), table, 384)
        export = default_export_dir(str(db), table)
        wait_for("the Parquet export of the first run",
                 lambda: exported_version(export) is not None and read_export(export).num_rows > 0, log)
        before = table_rows(db, table)
        assert len(before) == first["chunks_written"] == store.count()

        # Edit one document: the next scheduled run updates exactly that one.
        (src / "tides.txt").write_text("Tides\n\nThe tide tables of the harbour are printed every spring.\n")
        wait_for("a scheduled run picked up the edit",
                 lambda: any(r["docs_updated"] for r in ingest_runs(db, "completed", src)), log)
        completed = ingest_runs(db, "completed", src)
        assert sum(r["docs_updated"] for r in completed) == 1
        assert sum(r["docs_added"] for r in completed) == len(CORPUS)
        after = table_rows(db, table)
        changed = {r["doc_id"] for cid, r in after.items() if cid not in before or before[cid]["run_id"] != r["run_id"]}
        gone = {before[cid]["doc_id"] for cid in before.keys() - after.keys()}
        assert {Path(d).name for d in changed | gone} == {"tides.txt"}, changed | gone
        assert any("tide tables" in r["text"] for r in after.values())

        # A scheduled run SIGKILLed while it runs: a later scheduled run completes.
        def running_flow_process() -> psutil.Process | None:
            for p in psutil.Process(proc.pid).children(recursive=True):
                try:
                    if "prefect.engine" in " ".join(p.cmdline()) and time.time() - p.create_time() > 3:
                        return p
                except psutil.NoSuchProcess:
                    pass
            return None

        victim = wait_for("a scheduled run in progress", running_flow_process, log, every=0.5)
        victim.kill()
        killed_at = time.time()
        wait_for("a scheduled run completed after the kill",
                 lambda: [r for r in ingest_runs(db, "completed", src) if r["started"].timestamp() > killed_at], log)
        assert not [r for r in ingest_runs(db, "running", src) if r["started"].timestamp() < killed_at - 5]

        # The evaluation deployment fired after an ingestion and wrote its results.
        wait_for("eval_results written by the triggered evaluation",
                 lambda: (t := open_table_if_exists(connect(str(db)), "eval_results")) is not None and t.count_rows() > 0, log)
        print(f"serve journey done in {time.monotonic() - t0:.0f}s")
    finally:
        stop_tree(proc)
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{api}/health", timeout=3)
    assert "Traceback" not in log.read_text(errors="replace").split("stopping")[-1]


@pytest.mark.xdist_group("journey-worker")
def test_prefect_deploy_and_a_process_worker(tmp_path):
    """The Prefect-native path: deployments/prefect.yaml deployed with `prefect deploy
    --all` to a real `prefect server start`, executed by `prefect worker start` on a
    process work pool, on the scheduler's own time."""
    src = write_files(tmp_path / "src", CORPUS)
    spans = write_spans_fixture(tmp_path / "spans")
    db, home = tmp_path / "db", tmp_path / "prefect-home"
    server = start_local_server(home)
    worker = None
    try:
        env = user_env(home, PREFECT_API_URL=server.url, GRAINLINE_WORK_POOL="grainline-test", GRAINLINE_SOURCE=str(src),
                       GRAINLINE_DB=str(db), GRAINLINE_INGEST_CRON="* * * * *", GRAINLINE_EVAL_DATASET=f"spans:{spans}",
                       GRAINLINE_EVAL_CRON="* * * * *", GRAINLINE_REPORTS=str(tmp_path / "reports"))
        run = dict(env=env, cwd=REPO / "deployments", capture_output=True, text=True, timeout=180)
        out = subprocess.run([PREFECT, "work-pool", "create", "grainline-test", "--type", "process"], **run)
        assert out.returncode == 0, out.stdout + out.stderr
        out = subprocess.run([PREFECT, "--no-prompt", "deploy", "--all"], **run)
        assert out.returncode == 0, out.stdout + out.stderr
        assert {"scheduled-ingest", "scheduled-eval"} <= deployment_names(server.url)
        log = tmp_path / "worker.log"
        worker = subprocess.Popen([PREFECT, "worker", "start", "--pool", "grainline-test"], env=env, cwd=tmp_path,
                                  stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True)
        t0 = time.monotonic()
        (first, *_) = wait_for("an ingestion run by the worker", lambda: ingest_runs(db, "completed", src), log)
        print(f"\nworker: first scheduled ingestion completed after {time.monotonic() - t0:.0f}s")
        assert first["docs_added"] == len(CORPUS)
        store = ChunkStore(str(db), first["table_name"], 384)
        assert store.count() == sum(r["chunks_written"] for r in ingest_runs(db, "completed", src)) - sum(
            r["chunks_deleted"] for r in ingest_runs(db, "completed", src))
        wait_for("eval_results written by the worker's evaluation run",
                 lambda: (t := open_table_if_exists(connect(str(db)), "eval_results")) is not None and t.count_rows() > 0, log)
        assert all(r["auto_scheduled"] for r in flow_runs(server.url) if r["state_type"] != "SCHEDULED")
    finally:
        if worker is not None:
            stop_tree(worker, signal.SIGINT)
        server.stop()
    assert server.process.poll() is not None


def _ingest_cmd(src: Path, db: Path) -> list[str]:
    return [sys.executable, "-m", "grainline.cli", "ingest", str(src), "--db", str(db), "-s", "sentence,paragraph",
            "--device", "cpu", "--batch-docs", "4", "--no-progress"]


def _run(cmd: list[str], env: dict, log: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    with open(log, "ab") as f:
        return subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=timeout)


@pytest.fixture(scope="module")
def kill_corpus(tmp_path_factory):
    """24 small documents and the table a clean `grainline ingest` makes of them (once
    for every seed)."""
    root = tmp_path_factory.mktemp("kill-corpus")
    rng = random.Random(0)
    files = {f"doc-{i:02d}.txt": f"Document {i}\n\n" + " ".join(
        f"Sentence {j} of document {i} talks about {rng.choice(['rivers', 'engines', 'violins', 'comets'])}."
        for j in range(3)) for i in range(24)}
    src = write_files(root / "src", files)
    log = root / "clean.log"
    t0 = time.monotonic()
    assert _run(_ingest_cmd(src, root / "clean"), user_env(root / "prefect-home"), log).returncode == 0, log.read_text()[-3000:]
    return src, root / "clean", time.monotonic() - t0


@pytest.mark.xdist_group("journey-kill")
@pytest.mark.parametrize("seed", [0, 1])
def test_cli_ingest_killed_then_rerun_gives_the_clean_table(tmp_path, seed, kill_corpus):
    """SIGKILL `grainline ingest` at a seeded moment: the flow process alone, on the
    kept local server (seed 0), or its whole process group with Prefect's temporary
    server (seed 1, GRAINLINE_PREFECT_SERVER=temporary). The same command again starts
    at once (nothing holds the table) and ends with the clean run's table."""
    src, clean, clean_s = kill_corpus
    rng = random.Random(seed)
    env = user_env(tmp_path / "prefect-home", **({"GRAINLINE_PREFECT_SERVER": "temporary"} if seed % 2 else {}))
    log = tmp_path / "ingest.log"

    db = tmp_path / "db"
    proc = subprocess.Popen(_ingest_cmd(src, db), env=env, stdout=open(log, "ab"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    # Kill once the run holds the table (seen in the ledger), at a seeded moment after.
    wait_for("the run to start writing", lambda: ingest_runs(db, "running"), log, timeout=clean_s * 3, every=0.2)
    time.sleep(rng.uniform(0.0, 3.0))
    if seed % 2:
        os.killpg(proc.pid, signal.SIGKILL)  # the flow process and its temporary server
    else:
        proc.kill()
    proc.wait(30)
    t1 = time.monotonic()
    out = _run(_ingest_cmd(src, db), env, log)
    rerun_s = time.monotonic() - t1
    assert out.returncode == 0, log.read_text()[-3000:]
    text = log.read_text()
    assert "waiting for the write lock" not in text.rsplit("Beginning flow run", 1)[-1]
    print(f"\nseed {seed}: clean run {clean_s:.0f}s, re-run after the kill {rerun_s:.0f}s")

    runs = ingest_runs(db)
    assert runs[-1]["status"] == "completed"
    assert all(r["status"] in ("completed", "interrupted") for r in runs), [r["status"] for r in runs]
    table = runs[-1]["table_name"]
    want, got = table_rows(clean, table), table_rows(db, table)
    assert got.keys() == want.keys()
    assert all(got[c]["text"] == want[c]["text"] for c in want)
    import numpy as np

    assert max(float(np.abs(np.asarray(got[c]["vector"]) - np.asarray(want[c]["vector"])).max()) for c in want) < 1e-5


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
    # No server was started (a short-lived helper process of some import is no server).
    servers = {pid: cmd for pid, cmd in children.items() if "prefect" in cmd or "uvicorn" in cmd}
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
