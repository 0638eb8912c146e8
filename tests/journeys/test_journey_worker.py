"""Journey: `prefect deploy --all` plus a process worker against `prefect server start`;
the scheduler creates every run."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest
from grainline.storage.chunks import ChunkStore, connect, open_table_if_exists

from grainline.server import start_local_server

from tests.conftest import write_files
from tests.journey import (
    PREFECT,
    REPO,
    deployment_names,
    flow_runs,
    ingest_runs,
    stop_tree,
    user_env,
    wait_for,
)
from tests.evaluation.test_evaluate import write_spans_fixture
from tests.ingest.test_ingest import CORPUS

pytestmark = pytest.mark.slow


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
