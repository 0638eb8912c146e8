"""The ingestion flow and the CLI under one session-scoped Prefect test server."""

from __future__ import annotations

import json
import os

import pytest
from typer.testing import CliRunner

from grainline.cli import app
from grainline.storage.ledger import Ledger

from tests.conftest import write_files

pytestmark = pytest.mark.usefixtures("prefect_harness")

CORPUS = {
    "a.md": "---\ntitle: Volcanoes\n---\n# Volcanoes\n\nMagma rises through the crust and erupts as lava. "
    "Explosive eruptions throw ash high into the sky.\n",
    "b.txt": "Coffee\n\nRoasting turns green coffee beans brown. The first crack is a popping sound.\n",
    "bad.txt": b"\x00\x01\x02binary\x00",
}


def test_flow_runs_publishes_artifact_and_records_ledger(tmp_path, embedder):
    from prefect.client.orchestration import get_client

    from grainline.embedding import EmbedderSettings
    from grainline.flows.ingest import ingest_flow
    from grainline.ingest import IngestSettings

    src = write_files(tmp_path / "src", CORPUS)
    db = str(tmp_path / "db")
    result = ingest_flow(IngestSettings(source=str(src), strategies="sentence,paragraph", db=db,
                                        embedder=EmbedderSettings(device="cpu")))
    assert result["status"] == "completed"
    c = result["counts"]
    assert (c["docs_seen"], c["docs_added"], c["docs_failed"]) == (2, 2, 1)
    assert c["failures"][0]["where"] == "bad.txt"
    assert "| 2 | 2 | 0 | 0 | 0 | 1 |" in result["summary"]
    (row,) = Ledger(db).runs()
    assert row["run_id"] == result["run_id"] and row["status"] == "completed"
    assert set(row["parameters"]["strategies"]) == {"sentence", "paragraph"}

    import asyncio

    async def artifact():
        async with get_client() as client:
            return await client.read_latest_artifacts()

    arts = [a for a in asyncio.run(artifact()) if a.key == "grainline-ingest-summary"]
    assert arts and result["run_id"] in arts[0].data


def test_cli_ingest_search_and_strict(tmp_path, embedder):
    src = write_files(tmp_path / "src", CORPUS)
    db = str(tmp_path / "db")
    runner = CliRunner()
    res = runner.invoke(app, ["ingest", str(src), "--strategy", "sentence,paragraph,article", "--db", db, "--device", "cpu", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "2 added" in res.output and "FAILED bad.txt" in res.output
    res = runner.invoke(app, ["ingest", str(src), "--db", db, "--device", "cpu", "--no-progress", "--strict"])
    assert res.exit_code == 1
    assert "2 unchanged" in res.output
    res = runner.invoke(app, ["search", "lava and ash from a mountain", "--strategy", "sentence", "-k", "2", "--db", db, "--device", "cpu", "--json"])
    assert res.exit_code == 0, res.output
    hits = [json.loads(line) for line in res.output.strip().splitlines()]
    assert [h["rank"] for h in hits] == [1, 2] and hits[0]["doc_id"] == os.path.realpath(src / "a.md")


def test_cli_errors_name_the_bad_value(tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["ingest", str(tmp_path / "missing"), "--db", str(tmp_path / "db")])
    assert res.exit_code == 2 and "missing" in res.output
    res = runner.invoke(app, ["ingest", str(tmp_path), "--strategy", "word", "--db", str(tmp_path / "db")])
    assert res.exit_code == 2 and "unknown chunking strategy 'word'" in res.output and "paragraph" in res.output
    res = runner.invoke(app, ["search", "x", "--strategy", "word", "--db", str(tmp_path / "db")])
    assert res.exit_code == 2 and "valid: article, paragraph, sentence" in res.output


def test_cli_restore_rolls_back(tmp_path, embedder):
    from grainline.ingest import IngestSettings, run_ingest
    from grainline.embedding import EmbedderSettings

    src = write_files(tmp_path / "src", {"a.md": CORPUS["a.md"]})
    db = str(tmp_path / "db")
    first = run_ingest(IngestSettings(source=str(src), db=db, strategies="sentence", embedder=EmbedderSettings(device="cpu")))
    write_files(src, {"b.txt": CORPUS["b.txt"]})
    run_ingest(IngestSettings(source=str(src), db=db, strategies="sentence", embedder=EmbedderSettings(device="cpu")))
    runner = CliRunner()
    res = runner.invoke(app, ["restore", str(first.version_after), "--db", db])
    assert res.exit_code == 0, res.output
    from grainline.storage.chunks import ChunkStore

    store = ChunkStore(db, embedder.identity.table_name, embedder.identity.dim)
    assert {r for b in store.scan(["doc_id"]) for r in b.column("doc_id").to_pylist()} == {os.path.realpath(src / "a.md")}
    res = runner.invoke(app, ["restore", "999", "--db", db])
    assert res.exit_code == 2 and "no version 999" in res.output


def test_cli_chunk_settings_and_record_fields(tmp_path, embedder):
    src = write_files(tmp_path / "src", {"r.jsonl": json.dumps({"key": "k1", "body": "Lava flows downhill. " * 40, "name": "Lava"}) + "\n"})
    db = str(tmp_path / "db")
    res = CliRunner().invoke(app, [
        "ingest", str(src), "--strategy", "paragraph", "--db", db, "--device", "cpu", "--no-progress",
        "--chunk", "paragraph.max_tokens=32", "--chunk", "paragraph.overlap=0",
        "--id-field", "key", "--text-field", "body", "--title-field", "name",
    ])
    assert res.exit_code == 0, res.output
    from grainline.storage.chunks import ChunkStore

    store = ChunkStore(db, embedder.identity.table_name, embedder.identity.dim)
    rows = [r for b in store.scan(["doc_id", "title", "n_tokens", "params"]) for r in b.to_pylist()]
    assert {r["doc_id"] for r in rows} == {os.path.realpath(src / "r.jsonl") + "#k1"} and {r["title"] for r in rows} == {"Lava"}
    assert len(rows) > 3 and all(r["n_tokens"] <= 32 for r in rows)
    assert json.loads(rows[0]["params"])["max_tokens"] == 32
    bad = CliRunner().invoke(app, ["ingest", str(src), "--db", db, "--chunk", "paragraph.max_tokens"])
    assert bad.exit_code == 2 and "STRATEGY.SETTING=VALUE" in bad.output
    bad = CliRunner().invoke(app, ["ingest", str(src), "--db", db, "--chunk", "paragraph.maxtokens=3"])
    assert bad.exit_code == 2 and "maxtokens" in bad.output


@pytest.fixture
def settings_reader():
    """A reader for ``.probe`` files that records the flow-run heartbeat frequency of
    the Prefect settings it runs under (it runs inside the flow)."""
    from prefect.settings import get_current_settings

    from grainline.documents import Document
    from grainline.readers import register_reader
    from grainline.readers.registry import READERS

    seen: list = []

    @register_reader(".probe")
    def read_probe(path, root, settings):
        seen.append(get_current_settings().flows.heartbeat_frequency)
        yield Document(path.relative_to(root).as_posix(), path.read_text())

    yield seen
    del READERS[".probe"]


def test_a_foreground_run_sends_no_heartbeats_a_deployment_run_does(tmp_path, embedder, settings_reader, monkeypatch):
    """`grainline ingest` and the bench run the flow in the foreground without Prefect's
    flow-run heartbeats (joining their thread cost each run up to a second);
    GRAINLINE_FLOW_HEARTBEATS=1 keeps them, and the flow itself (what a deployment
    runs) keeps Prefect's setting."""
    from grainline.embedding import EmbedderSettings
    from grainline.flows.ingest import ingest_flow, ingest_here
    from grainline.ingest import IngestSettings

    src = write_files(tmp_path / "src", {"a.probe": "Probes measure the wind."})
    s = IngestSettings(source=str(src), strategies="sentence", db=str(tmp_path / "db"), export_parquet=False,
                       embedder=EmbedderSettings(device="cpu"), rehash=True)
    assert ingest_here(s)["status"] == "completed"
    assert ingest_flow(s)["status"] == "completed"
    monkeypatch.setenv("GRAINLINE_FLOW_HEARTBEATS", "1")
    assert ingest_here(s)["status"] == "completed"
    default = __import__("prefect.settings", fromlist=["x"]).get_current_settings().flows.heartbeat_frequency
    assert default is not None and settings_reader == [None, default, default]
