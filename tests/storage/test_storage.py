"""Storage on real LanceDB tables in tmp_path: upserts, stale-chunk deletion, vector
reuse lookups, restore, the ledger and the Parquet export."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from grainline.storage.chunks import ChunkStore
from grainline.storage.ledger import Ledger, RunCounts, RunRecord
from grainline.storage.parquet import DUCKDB_VIEW, MARKER, export_table, exported_version, read_export
from grainline.storage.schema import chunks_schema

DIM = 4


def rows(specs: list[tuple[str, str, str, str]], seed: int = 0) -> pa.Table:
    """specs: (chunk_id, doc_id, chunker_key, text)."""
    rng = np.random.default_rng(seed)
    schema = chunks_schema(DIM)
    n = len(specs)
    data = {f.name: [None] * n for f in schema}
    data["chunk_id"] = [s[0] for s in specs]
    data["doc_id"] = [s[1] for s in specs]
    data["chunker_key"] = [s[2] for s in specs]
    data["strategy"] = [s[2].split("-")[0] for s in specs]
    data["text"] = [s[3] for s in specs]
    data["content_hash"] = [f"h:{s[3]}" for s in specs]
    data["doc_hash"] = ["dh"] * n
    data["source_root"] = ["/root"] * n
    data["n_windows"] = [1] * n
    vecs = rng.normal(size=(n, DIM)).astype(np.float32)
    data["vector"] = pa.FixedSizeListArray.from_arrays(pa.array(vecs.ravel()), DIM)
    return pa.Table.from_pydict(data, schema=schema)


def ids(store: ChunkStore) -> list[str]:
    return sorted(r for b in store.scan(["chunk_id"]) for r in b.column("chunk_id").to_pylist())


def test_upsert_replaces_and_deletes_stale_chunks_in_one_commit(tmp_path):
    store = ChunkStore(str(tmp_path / "db"), "chunks_t", DIM)
    store.upsert_documents(rows([("a1", "a", "p-1", "x"), ("a2", "a", "p-1", "y"), ("b1", "b", "p-1", "z")]), ["a", "b"], ["p-1"])
    v1 = store.version()
    res = store.upsert_documents(rows([("a1", "a", "p-1", "x2"), ("a3", "a", "p-1", "w")]), ["a"], ["p-1"])
    assert res == {"inserted": 1, "updated": 1, "deleted": 1}
    assert store.version() == v1 + 1
    assert ids(store) == ["a1", "a3", "b1"]
    # another chunker key of the same document is untouched
    store.upsert_documents(rows([("a9", "a", "s-1", "q")]), ["a"], ["s-1"])
    store.upsert_documents(rows([("a1", "a", "p-1", "x2")]), ["a"], ["p-1"])
    assert ids(store) == ["a1", "a9", "b1"]


def test_new_documents_are_appended_in_one_commit_like_a_merge(tmp_path):
    """all_new appends (no join against the table); the table ends as a merge leaves it."""
    appended = ChunkStore(str(tmp_path / "a"), "chunks_t", DIM)
    merged = ChunkStore(str(tmp_path / "m"), "chunks_t", DIM)
    first = rows([("a1", "a", "p-1", "x"), ("a2", "a", "p-1", "y")])
    batch = rows([("b1", "b", "p-1", "z"), ("b2", "b", "p-1", "x"), ("c1", "c", "p-1", "w")], seed=1)
    for store, all_new in ((appended, True), (merged, False)):
        store.upsert_documents(first, ["a"], ["p-1"], all_new=all_new)
        v = store.version()
        res = store.upsert_documents(batch, ["b", "c"], ["p-1"], all_new=all_new)
        assert res == {"inserted": 3, "updated": 0, "deleted": 0} and store.version() == v + 1
    cols = [f.name for f in appended.schema]
    got, want = (pa.Table.from_batches(list(s.scan(cols))).sort_by("chunk_id") for s in (appended, merged))
    assert got.equals(want) and got.num_rows == 5
    # documents that give no chunks: nothing to write, no commit
    v = appended.version()
    assert appended.upsert_documents(batch.slice(0, 0), ["d"], ["p-1"], all_new=True)["inserted"] == 0
    assert appended.version() == v
    # a batch naming one chunk twice is merged, as before, instead of appended blindly
    twice = rows([("e1", "e", "p-1", "q"), ("e1", "e", "p-1", "q")])
    for store, all_new in ((appended, True), (merged, False)):
        store.upsert_documents(twice, ["e"], ["p-1"], all_new=all_new)
    assert ids(appended) == ids(merged)


def test_doc_states_and_vector_lookup(tmp_path):
    store = ChunkStore(str(tmp_path / "db"), "chunks_t", DIM)
    t = rows([("a1", "a", "p-1", "x"), ("b1", "b", "s-1", "y")])
    store.upsert_documents(t, ["a", "b"], ["p-1", "s-1"])
    states = store.doc_states()
    assert states["a"].hashes == {"p-1": "dh"} and states["a"].source_root == "/root"
    found = store.vectors_by_hash({"h:x", "h:nothing"})
    assert set(found) == {"h:x"}
    np.testing.assert_allclose(found["h:x"][0], t.column("vector").to_pylist()[0], rtol=0, atol=0)


def test_a_text_stored_many_times_gives_one_vector_read_at_the_version_checked_out(tmp_path):
    """Copies of a text across documents, fragments and versions: one vector per hash
    (that text's), read from the version the store has checked out."""
    store = ChunkStore(str(tmp_path / "db"), "chunks_t", DIM)
    for k in range(3):  # three commits: three fragments, each with copies of "x"
        store.upsert_documents(rows([(f"c{k}{j}", f"d{k}{j}", "p-1", "x") for j in range(4)]
                                    + [(f"u{k}", f"e{k}", "p-1", f"only-{k}")], seed=7),
                               [f"d{k}{j}" for j in range(4)] + [f"e{k}"], ["p-1"])
    want_x = rows([("c00", "d00", "p-1", "x")], seed=7).column("vector").to_pylist()[0]
    v = store.version()
    store.upsert_documents(rows([("n1", "n", "p-1", "new")]), ["n"], ["p-1"])
    found = store.vectors_by_hash({"h:x", "h:only-0", "h:only-2", "h:new"})
    assert set(found) == {"h:x", "h:only-0", "h:only-2", "h:new"}
    np.testing.assert_array_equal(found["h:x"][0], np.asarray(want_x, dtype=np.float32))
    store.checkout(v)  # the run's starting version: the later text is not there
    assert set(store.vectors_by_hash({"h:x", "h:new"})) == {"h:x"}


def test_dimension_mismatch_is_refused(tmp_path):
    ChunkStore(str(tmp_path / "db"), "chunks_t", DIM).upsert_documents(rows([("a1", "a", "p-1", "x")]), ["a"], ["p-1"])
    with pytest.raises(ValueError, match="4-d vectors but the model gives 8-d"):
        ChunkStore(str(tmp_path / "db"), "chunks_t", 8)


def test_restore_rolls_back_to_a_named_version(tmp_path):
    store = ChunkStore(str(tmp_path / "db"), "chunks_t", DIM)
    store.upsert_documents(rows([("a1", "a", "p-1", "x")]), ["a"], ["p-1"])
    good = store.version()
    store.upsert_documents(rows([("b1", "b", "p-1", "y")]), ["b"], ["p-1"])
    assert ids(store) == ["a1", "b1"]
    store.restore(good)
    assert ids(store) == ["a1"]
    with pytest.raises(ValueError, match="no version 999"):
        store.restore(999)


def test_ledger_upserts_one_row_per_run(tmp_path):
    ledger = Ledger(str(tmp_path / "db"))
    rec = RunRecord(run_id="r1", flow="ingest", source="/src", table_name="t", model_id="m", parameters={"a": 1})
    ledger.write(rec)
    assert ledger.runs()[0]["status"] == "running"
    rec.status = "completed"
    rec.counts = RunCounts(docs_seen=3, failures=[{"where": "x", "reason": "bad", "stage": "read"}])
    ledger.write(rec)
    (row,) = ledger.runs()
    assert row["status"] == "completed" and row["docs_seen"] == 3
    assert row["failures"] == [{"where": "x", "reason": "bad", "stage": "read"}]
    assert row["parameters"] == {"a": 1}


def test_parquet_export_round_trip_partitioned_by_strategy(tmp_path):
    store = ChunkStore(str(tmp_path / "db"), "chunks_t", DIM)
    t = rows([("a1", "a", "paragraph-1", "x"), ("a2", "a", "sentence-1", "y"), ("b1", "b", "sentence-1", "z")])
    store.upsert_documents(t, ["a", "b"], ["paragraph-1", "sentence-1"])
    out = tmp_path / "export"
    assert export_table(store.table, str(out)).rows == 3
    # the partitions, and the marker naming the table version the export holds (readers skip it)
    assert sorted(p.name for p in out.iterdir()) == [DUCKDB_VIEW, MARKER, "strategy=paragraph", "strategy=sentence"]
    assert exported_version(str(out)) == store.version()
    back = read_export(str(out)).sort_by("chunk_id")
    assert back.column("chunk_id").to_pylist() == ["a1", "a2", "b1"]
    assert back.column("strategy").to_pylist() == ["paragraph", "sentence", "sentence"]
    assert back.column("vector").to_pylist() == t.sort_by("chunk_id").column("vector").to_pylist()
    # a second export replaces the first rather than adding to it, and clears what an
    # export killed mid-way left beside it (it never replaced the complete one)
    dead = tmp_path / ".export.tmp-deadbeef" / "strategy=sentence"
    dead.mkdir(parents=True)
    (dead / "part-0.parquet").write_bytes(b"half a file")
    store.delete("doc_id = 'b'")
    export_table(store.table, str(out))
    assert read_export(str(out)).num_rows == 2
    assert exported_version(str(out)) == store.version()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".export")) == [".export.lock"]
    assert exported_version(str(tmp_path / "never-exported")) is None


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=st.lists(st.text(min_size=0, max_size=50), min_size=1, max_size=12, unique=True))
def test_storage_round_trip_property(tmp_path_factory, texts):
    store = ChunkStore(str(tmp_path_factory.mktemp("db")), "chunks_t", DIM)
    specs = [(f"c{i}", f"d'{i % 3}", "p-1", t) for i, t in enumerate(texts)]
    table = rows(specs)
    store.upsert_documents(table, sorted({s[1] for s in specs}), ["p-1"])
    back = {r["chunk_id"]: r for b in store.scan(["chunk_id", "doc_id", "text", "vector"]) for r in b.to_pylist()}
    assert set(back) == {s[0] for s in specs}
    for s, vec in zip(specs, table.column("vector").to_pylist()):
        assert back[s[0]]["text"] == s[3] and back[s[0]]["doc_id"] == s[1]
        assert back[s[0]]["vector"] == vec
    # writing the same rows again changes nothing
    store.upsert_documents(table, sorted({s[1] for s in specs}), ["p-1"])
    assert store.count() == len(specs)
