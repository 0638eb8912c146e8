"""Deployments on a real Prefect server: schedules stored as written, runs triggered
through the API, overlapping runs on one table queued by the table lock, and the Dask
runner writing the same rows as the default one."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from grainline.server import start_local_server
from grainline.storage.chunks import ChunkStore
from grainline.storage.ledger import Ledger

from tests.conftest import write_files
from tests.evaluation.test_evaluate import write_spans_fixture
from tests.ingest.test_ingest import CORPUS

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory):
    server = start_local_server(tmp_path_factory.mktemp("prefect-home"))
    yield server
    server.stop()
    assert server.process.poll() is not None, "the Prefect server is still running"


@pytest.fixture
def api(prefect_server):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: prefect_server.url}):
        yield prefect_server.url


async def _wait_for_deployment(name: str, timeout: float = 120):
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    deadline = time.monotonic() + timeout
    async with get_client() as client:
        while time.monotonic() < deadline:
            try:
                return await client.read_deployment_by_name(name)
            except ObjectNotFound:
                await asyncio.sleep(1)
    raise TimeoutError(f"deployment {name} was not registered in {timeout}s")


async def _wait_final(flow_run_ids, timeout: float = 400):
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + timeout
    async with get_client() as client:
        while time.monotonic() < deadline:
            runs = [await client.read_flow_run(i) for i in flow_run_ids]
            if all(r.state is not None and r.state.is_final() for r in runs):
                return runs
            await asyncio.sleep(1)
    raise TimeoutError("flow runs did not finish in time")


def test_scheduled_deployments_on_a_real_server(api, tmp_path, embedder):
    from prefect.deployments import run_deployment

    src = write_files(tmp_path / "src", CORPUS)
    spans = write_spans_fixture(tmp_path / "spans")
    db = tmp_path / "db"
    env = dict(os.environ, PREFECT_API_URL=api, PREFECT_SERVER_ANALYTICS_ENABLED="false")
    serve = subprocess.Popen(
        [sys.executable, "-m", "grainline.cli", "serve", "--api-url", api, "--source", str(src), "--db", str(db),
         "--ingest-cron", "15 3 * * *", "--eval-dataset", f"spans:{spans}", "--eval-cron", "30 4 * * 1",
         "--reports", str(tmp_path / "reports"), "--timezone", "Europe/Paris"],
        env=env, cwd=tmp_path, stdout=open(tmp_path / "serve.log", "wb"), stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        ingest = asyncio.run(_wait_for_deployment("grainline-ingest/scheduled-ingest"))
        evaluate = asyncio.run(_wait_for_deployment("grainline-evaluate/scheduled-eval"))
        # schedules, parameters, tags and descriptions as written
        (sched,) = ingest.schedules
        assert (sched.schedule.cron, sched.schedule.timezone, sched.active) == ("15 3 * * *", "Europe/Paris", True)
        assert evaluate.schedules[0].schedule.cron == "30 4 * * 1"
        settings = ingest.parameters["settings"]  # the flow's IngestSettings, stored whole
        assert settings["source"] == str(src) and settings["db"] == str(db)
        assert settings["sync"] == "full"
        assert set(ingest.tags) == {"grainline", "ingest"} and "full sync" in ingest.description
        assert evaluate.parameters["settings"]["dataset"] == f"spans:{spans}"

        # one run of each, triggered through the API
        run = run_deployment("grainline-ingest/scheduled-ingest", timeout=300)
        assert run.state.is_completed(), (run.state, (tmp_path / "serve.log").read_text()[-3000:])
        (row,) = Ledger(str(db)).runs("ingest")
        assert row["status"] == "completed" and row["docs_added"] == 4
        store = ChunkStore(str(db), embedder.identity.table_name, embedder.identity.dim)
        assert store.count() == row["chunks_written"] > 0

        ev = run_deployment("grainline-evaluate/scheduled-eval", timeout=300)
        assert ev.state.is_completed(), (ev.state, (tmp_path / "serve.log").read_text()[-3000:])
        assert "best nDCG@10" in ev.state.message
        from grainline.storage.chunks import connect

        assert connect(str(db)).open_table("eval_results").count_rows() > 0

        # two overlapping runs that write the same table: both complete, one after the other
        # (a custom run passes the deployment's settings whole, edited: Prefect merges
        # run parameters one level deep)
        a = run_deployment("grainline-ingest/scheduled-ingest", timeout=0,
                           parameters={"settings": {**settings, "strategies": ["sentence"], "db": str(db / "race")}})
        b = run_deployment("grainline-ingest/scheduled-ingest", timeout=0,
                           parameters={"settings": {**settings, "strategies": ["paragraph", "article"],
                                                    "db": str(db / "race")}})
        runs = asyncio.run(_wait_final([a.id, b.id]))
        assert all(r.state.is_completed() for r in runs), [r.state for r in runs]
        ledger = Ledger(str(db / "race")).runs("ingest")
        assert len(ledger) == 2 and all(r["status"] == "completed" for r in ledger)
        first, second = ledger
        assert second["started"] >= first["finished"], "the two runs wrote the table at the same time"
        race = ChunkStore(str(db / "race"), embedder.identity.table_name, embedder.identity.dim)
        ids = [i for bt in race.scan(["chunk_id"]) for i in bt.column("chunk_id").to_pylist()]
        assert len(ids) == len(set(ids)) == first["chunks_written"] + second["chunks_written"]
    finally:
        os.killpg(serve.pid, signal.SIGTERM)
        try:
            serve.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(serve.pid, signal.SIGKILL)
            serve.wait(10)
    assert serve.poll() is not None


@pytest.mark.usefixtures("prefect_harness")
def test_dask_runner_writes_the_same_rows_as_the_default_runner(tmp_path, embedder):
    from grainline.embedding import EmbedderSettings
    from grainline.flows.ingest import ingest_flow
    from grainline.ingest import IngestSettings

    src = write_files(tmp_path / "src", {**CORPUS, **{f"more/{i}.txt": f"Note {i}\n\nThis note number {i} is about "
                                                       f"topic {i % 3}. It has a second sentence." for i in range(10)}})
    kw = dict(source=str(src), embedder=EmbedderSettings(device="cpu"), batch_docs=3, export_parquet=False)
    local = ingest_flow(IngestSettings(db=str(tmp_path / "local"), **kw))
    dask = ingest_flow(IngestSettings(db=str(tmp_path / "dask"), **kw), runner="dask", dask_workers=2)
    assert local["counts"]["chunks_written"] == dask["counts"]["chunks_written"] > 0

    def rows(db):
        store = ChunkStore(db, embedder.identity.table_name, embedder.identity.dim)
        cols = [f.name for f in store.schema if f.name not in ("run_id", "ingested_at", "source_root")]
        out = {}
        for b in store.scan(cols):
            for r in b.to_pylist():
                out[r.pop("chunk_id")] = r
        return out

    a, b = rows(str(tmp_path / "local")), rows(str(tmp_path / "dask"))
    assert a.keys() == b.keys()
    for cid in a:
        va, vb = np.asarray(a[cid].pop("vector")), np.asarray(b[cid].pop("vector"))
        np.testing.assert_allclose(va, vb, atol=1e-5)
        assert a[cid] == b[cid]
