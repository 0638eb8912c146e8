"""A run costs what changed, not what the table holds: the write task's arguments do not
grow with the table, an edit replaces its document's rows without rewriting the table's
data files, and maintenance adds new rows to the indexes as deltas. Work is counted
(objects Prefect visits, data files rewritten, index actions), never timed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from grainline.embedding import EmbedderSettings
from grainline.ingest import IngestSettings, table_name_for
from grainline.storage.chunks import ChunkStore, connect
from grainline.storage.ledger import Ledger
from grainline.storage.parquet import DUCKDB_VIEW, default_export_dir, read_marker
from grainline.storage.schema import chunks_schema

from tests.conftest import write_files
from tests.journey import user_env

CPU = EmbedderSettings(device="cpu")


def _fake_documents(store: ChunkStore, n_docs: int) -> None:
    """``n_docs`` stored documents of another source (one row each), written straight
    through storage: they only make the table big."""
    schema = chunks_schema(store.dim)
    data = {f.name: [None] * n_docs for f in schema}
    ids = [f"/elsewhere/doc-{i:06d}.txt" for i in range(n_docs)]
    data.update(chunk_id=[f"c-{i}" for i in range(n_docs)], doc_id=ids, strategy=["paragraph"] * n_docs,
                chunker_key=["paragraph-x"] * n_docs, text=[f"text {i}" for i in range(n_docs)],
                content_hash=[f"h-{i}" for i in range(n_docs)], doc_hash=["dh"] * n_docs, source_root=["/elsewhere"] * n_docs,
                n_windows=[1] * n_docs)
    vecs = np.random.default_rng(0).normal(size=(n_docs, store.dim)).astype(np.float32)
    data["vector"] = pa.FixedSizeListArray.from_arrays(pa.array(vecs.ravel()), store.dim)
    store.upsert_documents(pa.Table.from_pydict(data, schema=schema), ids, ["paragraph-x"], all_new=True)


@pytest.mark.usefixtures("prefect_harness")
def test_the_flow_tasks_arguments_do_not_grow_with_the_table(tmp_path, embedder, monkeypatch):
    """Prefect walks every task argument on each call to record its inputs. The objects
    it visits per run of the same few documents are the same whether the table holds
    none or 3,000 other documents (it was every stored document's state per batch)."""
    import prefect.utilities.engine as engine

    from grainline.flows.ingest import ingest_flow

    visited = [0]
    real_visit = engine.visit_collection

    def counting_visit(expr, visit_fn, *args, **kwargs):
        def counted(obj, *a, **k):
            visited[0] += 1
            return visit_fn(obj, *a, **k)
        return real_visit(expr, counted, *args, **kwargs)

    monkeypatch.setattr(engine, "visit_collection", counting_visit)
    files = {f"d{i}.txt": f"Document {i}\n\nIt says something about topic {i}. Then it says more." for i in range(6)}
    counts = []
    for big in (False, True):
        db = str(tmp_path / f"db-{big}")
        settings = IngestSettings(source=str(write_files(tmp_path / f"src-{big}", files)), strategies="paragraph", db=db,
                                  embedder=CPU, batch_docs=2)
        if big:
            _fake_documents(ChunkStore(db, table_name_for(settings), 384), 3000)
        visited[0] = 0
        result = ingest_flow(settings)
        assert result["status"] == "completed" and result["counts"]["docs_added"] == 6
        counts.append(visited[0])
    small, big = counts
    assert small > 0
    assert big <= small * 1.1 + 20, f"Prefect visited {small} objects for an empty table, {big} beside 3,000 documents"


def _data_files(db: Path, table: str) -> set[str]:
    return {p.name for p in (db / f"{table}.lance" / "data").iterdir()}


def _cli(*args: str, env: dict, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "grainline.cli", *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.slow
def test_an_edit_through_the_cli_rewrites_its_document_not_the_table(tmp_path):
    """`grainline ingest` of a corpus, then one file edited, one added and one deleted,
    then `grainline ingest --sync full` again: the second run replaces the edited
    document's rows in one commit, leaves every data file of the first run in place
    (deletion vectors, not a rewrite), adds the new rows to the indexes as deltas; a
    third run edits a file of the second run's fragment, and the export keeps the files
    of the first run's fragment (its metadata did not move) and reads back through
    DuckDB as the table; the table ends exactly as a fresh ingestion of the final
    corpus makes it."""
    env = user_env(tmp_path / "prefect-home", GRAINLINE_PREFECT_SERVER="temporary")
    rng = np.random.default_rng(0)
    words = "river engine violin comet glacier harbor lantern meadow orbit pollen quartz signal".split()

    def text(i: int) -> str:
        return "\n\n".join(" ".join(rng.choice(words, 12)).capitalize() + f". Part {p} of file {i}." for p in range(3))

    files = {f"f{i:03d}.txt": text(i) for i in range(40)}
    src = write_files(tmp_path / "src", files)
    db = tmp_path / "db"
    common = ["--db", str(db), "-s", "paragraph", "--device", "cpu", "--no-progress", "--batch-docs", "8"]
    first = _cli("ingest", str(src), *common, env=env, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    (run1,) = Ledger(str(db)).runs("ingest")
    table = run1["table_name"]
    files_after_first = _data_files(db, table)
    names = {ix.name for ix in connect(str(db)).open_table(table).list_indices()}
    assert {"doc_id_idx", "content_hash_idx", "text_idx"} <= names, names

    (src / "f007.txt").write_text(files["f007.txt"] + "\n\nA new closing paragraph about a lighthouse.")
    (src / "f100.txt").write_text("Brand new file\n\nIt talks about lighthouses and keepers.")
    (src / "f020.txt").unlink()
    second = _cli("ingest", str(src), *common, "--sync", "full", env=env, cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    run2 = Ledger(str(db)).runs("ingest")[-1]
    c = run2
    assert (c["docs_updated"], c["docs_added"], c["docs_deleted"], c["docs_unchanged"]) == (1, 1, 1, 38), c
    # The first run vouched for the source manifest: the second trusted its 38 unchanged
    # files without reading a document's state, and vouches in turn.
    assert run1["parameters"]["source_manifest"]["trust"] == "checked"
    assert run2["parameters"]["source_manifest"]["trust"] == "vouched" and run2["files_unchanged"] == 38
    # Nothing of the first run's data was rewritten: an edit costs its own rows.
    assert files_after_first <= _data_files(db, table)
    actions = " | ".join(run2["maintenance"]["actions"])
    assert "as a delta of" in actions and "built full-text index" not in actions, actions

    # The export: a fragment whose metadata did not move keeps its hash in the marker and
    # its Parquet files (the same inodes: hard-linked, not rewritten; that its rows are not
    # scanned is tests/storage/test_parquet_incremental.py's); what DuckDB reads through
    # the export's view is the table.
    out = Path(default_export_dir(str(db), table))
    marker2 = read_marker(str(out))
    assert marker2["version"] == connect(str(db)).open_table(table).version
    frags2 = marker2["fragments"]
    files2 = {p.relative_to(out).as_posix(): p.stat().st_ino for p in out.glob("*/*.parquet")}
    (src / "f100.txt").write_text("Brand new file\n\nIt talks about lighthouses, keepers and fog.")
    third = _cli("ingest", str(src), *common, env=env, cwd=tmp_path)
    assert third.returncode == 0, third.stderr[-3000:]
    assert Ledger(str(db)).runs("ingest")[-1]["docs_updated"] == 1
    marker3 = read_marker(str(out))
    same = {f for f, h in marker3["fragments"].items() if frags2.get(f) == h}
    assert same, (frags2, marker3["fragments"])
    kept = [f for seg in marker3["segments"] if str(seg["fragment"]) in same for f in seg["files"]]
    assert kept and all((out / f).stat().st_ino == files2[f] for f in kept)
    import duckdb

    con = duckdb.connect()
    con.execute((out / DUCKDB_VIEW).read_text())
    cols = ["chunk_id", "doc_id", "text"]
    exported = con.sql(f'select {", ".join(cols)} from "{table}" order by chunk_id').fetchall()
    stored = connect(str(db)).open_table(table).to_arrow().select(cols).sort_by("chunk_id")
    assert exported == [tuple(r.values()) for r in stored.to_pylist()]

    fresh = tmp_path / "fresh"
    again = _cli("ingest", str(src), "--db", str(fresh), *common[2:], env=env, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    cols = ["chunk_id", "doc_id", "text", "content_hash", "doc_hash"]
    got, want = (connect(str(d)).open_table(table).to_arrow().select(cols).sort_by("chunk_id") for d in (db, fresh))
    assert got.equals(want)


def test_a_runs_recent_vectors_stay_bounded_and_own_their_memory():
    """The run's map of recent vectors holds at most its limit, forgets the least
    recently used first, and keeps copies (a row of a batch's array would keep the
    whole array alive)."""
    from grainline.ingest.reuse import RecentVectors

    rv = RecentVectors(limit=3)
    batch = np.arange(5 * 4, dtype=np.float32).reshape(5, 4)
    rv.put_many({f"h{i}": (batch[i], 1) for i in range(3)})
    assert set(rv.get_many(["h0"])) == {"h0"}  # h0 used: h1 is now the oldest
    rv.put_many({"h3": (batch[3], 2)})
    assert len(rv) == 3 and set(rv.get_many(["h0", "h1", "h2", "h3"])) == {"h0", "h2", "h3"}
    vec, windows = rv.get_many(["h3"])["h3"]
    assert windows == 2 and np.array_equal(vec, batch[3]) and not np.shares_memory(vec, batch)
