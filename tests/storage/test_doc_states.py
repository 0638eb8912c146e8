"""Document states read as a run needs them (storage/doc_states.py): a lookup by
``doc_id`` gives what a scan of the whole table gives, for any ids; a run's own writes
and deletions are seen; lookups stop once they have cost what one scan costs. Real
LanceDB tables in tmp_path."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from grainline.storage.chunks import ChunkStore, DocState
from grainline.storage.doc_states import DocStates
from grainline.storage.schema import chunks_schema

DIM = 8
KEYS = ["sentence-a", "paragraph-b"]


def _store(path, n_docs: int) -> ChunkStore:
    """A table of ``n_docs`` documents, each with one row per chunker key; document i's
    hash is ``h<i>`` under both keys except every fifth, whose paragraph rows hold an
    older hash (a document half rewritten)."""
    store = ChunkStore(str(path), "chunks_test", DIM)
    schema = chunks_schema(DIM)
    rows = [(i, f"/src/d{i:04d}.txt", key) for i in range(n_docs) for key in KEYS]
    n = len(rows)
    data = {f.name: [None] * n for f in schema}
    data.update(
        chunk_id=[f"c-{d}-{k}" for _, d, k in rows], doc_id=[d for _, d, _ in rows],
        strategy=[k.split("-")[0] for _, _, k in rows], chunker_key=[k for _, _, k in rows], text=["t"] * n,
        content_hash=[f"ch-{j}" for j in range(n)],
        doc_hash=[f"old{i}" if k == "paragraph-b" and i % 5 == 0 else f"h{i}" for i, _, k in rows],
        source_root=["/src"] * n, n_windows=[1] * n,
    )
    data["vector"] = pa.FixedSizeListArray.from_arrays(pa.array(np.zeros(n * DIM, np.float32)), DIM)
    if n:
        store.upsert_documents(pa.Table.from_pydict(data, schema=schema), [d for _, d, _ in rows], KEYS, all_new=True)
    else:
        store.table  # an empty table
    return store


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return _store(tmp_path_factory.mktemp("db"), 60)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(asked=st.lists(st.integers(0, 79), max_size=30), batches=st.integers(1, 4))
def test_lookups_give_what_a_scan_gives(store, asked, batches):
    """Any ids (stored or not, repeated), prefetched in any batches, then read: the same
    states as the whole table's scan, and ids the table lacks are absent."""
    full = store.doc_states()
    states = DocStates(store, rows=10**9)  # lookups never cost what this scan would
    ids = [f"/src/d{i:04d}.txt" for i in asked]
    for b in range(batches):
        states.prefetch(ids[b::batches])
    for d in ids:
        assert states.get(d) == full.get(d)
        assert (d in states) == (d in full)
    assert not states.whole


def test_every_documents_root_from_two_columns(store):
    """What a full sync lists to find the documents gone: every stored id and its root."""
    full = store.doc_states()
    assert store.doc_roots() == {d: st.source_root for d, st in full.items()} and len(full) == 60
    assert DocStates(store, rows=0).roots() == store.doc_roots()


def test_exact_states_and_the_runs_own_writes(store):
    states = DocStates(store, rows=10**9)
    assert states.get("/src/d0003.txt") == DocState("/src", {"sentence-a": "h3", "paragraph-b": "h3"})
    assert states.get("/src/d0005.txt").hashes == {"sentence-a": "h5", "paragraph-b": "old5"}
    assert states.get("/src/new.txt") is None and states.lookups == 3
    new = states.setdefault("/src/new.txt", DocState("/src"))
    assert states.get("/src/new.txt") is new and states.lookups == 3  # known now: no query
    assert states.pop("/src/d0003.txt").hashes["sentence-a"] == "h3"
    assert states.get("/src/d0003.txt") is None and states.lookups == 3


def test_lookups_stop_once_they_cost_what_a_scan_costs(store, tmp_path):
    states = DocStates(store, rows=0)  # a scan is free: the first need scans
    states.prefetch(["/src/d0001.txt"])
    assert states.whole and states.lookups == 0
    assert dict(states.items()) == store.doc_states()

    states = DocStates(store, rows=1)  # a scan of one row: one lookup already costs more
    states.prefetch(["/src/d0001.txt"])
    assert not states.whole and states.lookups == 1
    states.prefetch(["/src/d0002.txt"])
    assert states.whole and states.lookups == 1
    assert len(states) == 60

    empty = DocStates(_store(tmp_path / "empty", 0))
    empty.prefetch(["/src/x.txt"])
    assert empty.whole and empty.lookups == 0 and empty.get("/src/x.txt") is None


def test_relative_ids_are_found_by_a_filter(tmp_path):
    """Ids an older grainline stored relative to their root are listed for that root only."""
    store = _store(tmp_path / "db", 3)
    schema = chunks_schema(DIM)
    data = {f.name: [None] * 2 for f in schema}
    data.update(chunk_id=["r1", "r2"], doc_id=["notes/a.txt", "other.txt"], strategy=["sentence"] * 2,
                chunker_key=["sentence-a"] * 2, text=["t"] * 2, content_hash=["x1", "x2"], doc_hash=["d1", "d2"],
                source_root=["/src", "/elsewhere"], n_windows=[1, 1])
    data["vector"] = pa.FixedSizeListArray.from_arrays(pa.array(np.zeros(2 * DIM, np.float32)), DIM)
    store.upsert_documents(pa.Table.from_pydict(data, schema=schema), ["notes/a.txt", "other.txt"], ["sentence-a"], all_new=True)
    assert store.relative_ids("/src") == ["notes/a.txt"]
    assert store.relative_ids("/elsewhere") == ["other.txt"]
    assert store.relative_ids("/nowhere") == []


def test_evicted_states_are_read_again_by_whoever_needs_them_all(store):
    """A run lets go of the states of documents it is done with. After a scan, the
    others still answer from memory, but ``whole`` turns False, so asking for every
    state (a full sync) reads the table again rather than missing the evicted ones."""
    states = DocStates(store, rows=0)
    states.load_all()
    assert states.whole and states.held == 60
    states.evict(f"/src/d{i:04d}.txt" for i in range(50))
    assert not states.whole and states.held == 10
    assert states.get("/src/d0055.txt").hashes["sentence-a"] == "h55" and states.lookups == 0
    assert states.roots() == store.doc_roots() and states.whole and states.held == 60

    looked = DocStates(store, rows=10**9)  # by lookups: an evicted state is looked up again
    assert looked.get("/src/d0001.txt") is not None and looked.lookups == 1
    looked.evict(["/src/d0001.txt"])
    assert looked.held == 0 and looked.get("/src/d0001.txt") is not None and looked.lookups == 2


def test_a_table_past_the_scan_limit_is_never_read_whole(store, monkeypatch):
    """Past ``SCAN_MAX_ROWS`` the lookups go on however much they cost, so a run holds
    the states it asked for, not every stored document's."""
    import grainline.storage.doc_states as doc_states

    monkeypatch.setattr(doc_states, "SCAN_MAX_ROWS", 119)  # the table holds 120 rows
    states = DocStates(store, rows=120)
    states._scan_cost = 0.0  # a scan that costs nothing: below the limit it would be bought
    for i in range(3):
        states.prefetch([f"/src/d{i:04d}.txt"])
    assert not states.whole and states.lookups == 3 and states.held == 3
    monkeypatch.setattr(doc_states, "SCAN_MAX_ROWS", 120)
    states.prefetch(["/src/d0010.txt"])
    assert states.whole and states.lookups == 3 and states.held == 60
