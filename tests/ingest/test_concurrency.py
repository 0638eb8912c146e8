"""Concurrent writers, with real processes released at the same instant: two ingestions
of one table queue on the table's file lock; ingestion and evaluations on one database
share the ledger and eval_results tables without losing a row."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from grainline.embedding import EmbedderSettings
from grainline.chunkers import ChunkContext
from grainline.ingest import IngestSettings, chunk_docs, make_plans, run_ingest
from grainline.readers import iter_documents
from grainline.storage.chunks import ChunkStore, connect
from grainline.storage.ledger import Ledger
from grainline.storage.commits import retry_commit
from grainline.storage.lock_protocol import TableLockTimeout
from grainline.storage.locks import TableLock, lock_path

from tests.processes import Worker
from tests.evaluation.test_evaluate import write_spans_fixture

pytestmark = pytest.mark.slow

CPU = EmbedderSettings(device="cpu")


def write_notes(root: Path, ids: range) -> Path:
    """Small documents; the same id always gets the same text, wherever it is written."""
    root.mkdir(parents=True)
    for i in ids:
        (root / f"note-{i:02d}.txt").write_text(
            f"Note {i}\n\nThe station logged {i} storms this season. Wind from the west brought rain on day {i}.\n"
        )
    return root


def start_together(workers: list[Worker]) -> list[dict]:
    for w in workers:
        w.wait_ready()
    for w in workers:
        w.go()
    return [w.result() for w in workers]


def test_two_ingestions_of_one_table_take_turns(tmp_path, embedder):
    db = tmp_path / "db"
    a = write_notes(tmp_path / "a", range(0, 30))
    b = write_notes(tmp_path / "b", range(15, 45))  # notes 15-29 are in both
    kw = dict(db=str(db), strategies="sentence,paragraph", batch_docs=4, embedder=CPU)
    results = start_together([Worker("ingest", IngestSettings(source=str(src), **kw), f"run-{n}") for n, src in (("a", a), ("b", b))])
    assert all(r["status"] == "completed" for r in results)

    store = ChunkStore(str(db), embedder.identity.table_name, embedder.identity.dim)
    rows = [r for bt in store.scan(["chunk_id", "doc_id"]) for r in bt.to_pylist()]
    ids = [r["chunk_id"] for r in rows]
    assert len(ids) == len(set(ids)), "duplicate chunk ids"
    # a/ and b/ are two folders: their notes are 60 documents (ids are real paths)
    assert {r["doc_id"] for r in rows} == ({str(a.resolve() / f"note-{i:02d}.txt") for i in range(30)}
                                          | {str(b.resolve() / f"note-{i:02d}.txt") for i in range(15, 45)})
    # nothing lost or doubled: the table holds exactly the chunks of all the notes
    settings = IngestSettings(source=str(a), **kw)
    docs = [(d, "added") for src in (a, b) for d in iter_documents(src)]
    expected = chunk_docs(make_plans(settings, embedder), docs, ChunkContext.default(embedder.window))
    assert sorted(ids) == sorted(c.chunk_id for cd in expected.docs for c in cd.chunks)
    assert store.table.search(embedder.embed_queries(["storms"])[0]).limit(3).to_list()

    runs = Ledger(str(db)).runs("ingest")
    assert [r["status"] for r in runs] == ["completed", "completed"]
    first, second = runs
    # the second writer waited for the first to finish, then found the shared notes'
    # texts stored and reused their vectors
    assert second["started"] >= first["finished"]
    assert second["docs_added"] == first["docs_added"] == 30
    assert second["chunks_reused"] >= second["chunks_written"] // 2 > 0


def test_ingestion_during_an_evaluation_on_one_database(tmp_path, embedder):
    db = str(tmp_path / "db")
    spans = write_spans_fixture(tmp_path / "spans")
    from grainline.evaluation import EvalSettings

    ev = EvalSettings(dataset=f"spans:{spans}", db=db, strategies="sentence,paragraph", methods="dense,bm25",
                      reports_dir=str(tmp_path / "reports"), n_bootstrap=100, n_permutations=100, embedder=CPU)
    ingest = IngestSettings(source=str(write_notes(tmp_path / "notes", range(40))), db=db, batch_docs=2, embedder=CPU)
    res_ingest, res_eval = start_together([Worker("ingest", ingest, "ingest-1"), Worker("eval", ev)])
    assert res_ingest["status"] == "completed" and res_ingest["counts"]["docs_added"] == 40

    # both wrote the ledger: the ingestion's row and one per evaluation table (strategy)
    runs = Ledger(db).runs()
    assert all(r["status"] == "completed" for r in runs), [(r["run_id"], r["status"], r["error"]) for r in runs]
    tables = [r["table_name"] for r in runs]
    assert sorted(tables) == sorted({*tables}) and len(tables) == 3
    assert [r["run_id"] for r in runs if r["table_name"] == embedder.identity.table_name] == ["ingest-1"]
    # the two ran at the same time, not one after the other
    ing = next(r for r in runs if r["run_id"] == "ingest-1")
    assert any(r["started"] < ing["finished"] and ing["started"] < r["finished"] for r in runs if r is not ing)

    results = connect(db).open_table("eval_results").to_arrow()
    assert results.column("run_id").to_pylist() == [res_eval["run_id"]] * res_eval["n_results"]
    assert res_eval["n_results"] > 0
    store = ChunkStore(db, embedder.identity.table_name, embedder.identity.dim)
    assert store.count() == res_ingest["counts"]["chunks_written"] > 0


def test_a_writer_that_waits_too_long_gets_an_error_naming_the_table_and_lock(tmp_path, embedder):
    db = str(tmp_path / "db")
    table = embedder.identity.table_name
    src = write_notes(tmp_path / "src", range(2))
    with TableLock(db, table, timeout_s=1):
        t0 = time.monotonic()
        with pytest.raises(TableLockTimeout) as err:
            run_ingest(IngestSettings(source=str(src), db=db, embedder=CPU, lock_timeout_s=0.5))
        assert time.monotonic() - t0 >= 0.5
    assert repr(table) in str(err.value) and str(lock_path(db, table)) in str(err.value)
    assert Ledger(db).runs() == []  # it never started
    # once the lock is free the same run goes through
    assert run_ingest(IngestSettings(source=str(src), db=db, embedder=CPU, lock_timeout_s=0.5)).status == "completed"


def test_tasks_retry_by_type_never_by_message():
    """A task retries transient errors by their type; words in a message decide nothing.
    Storage types LanceDB's lost commit races once, where it calls LanceDB."""
    from grainline.errors import TerminalError, TransientError
    from grainline.flows.retry import is_transient
    from grainline.storage.commits import CommitConflict, StoreUnavailable, typed
    from grainline.storage.lease import LeaseLost

    conflict = typed(OSError("Retryable commit conflict for version 7"))
    assert isinstance(conflict, CommitConflict) and is_transient(conflict)
    assert isinstance(typed(RuntimeError("request timed out")), StoreUnavailable)
    assert is_transient(TimeoutError()) and is_transient(ConnectionResetError()) and is_transient(TransientError("x"))
    for terminal in (RuntimeError("commit conflict"), OSError("try again"), LeaseLost("could not be renewed, try again"),
                     TerminalError("timed out"), FileNotFoundError("timeout"), ValueError("conflict"), None):
        assert not is_transient(terminal)
    assert typed(FileNotFoundError("timed out")).__class__ is FileNotFoundError


def test_commit_races_are_retried_other_errors_are_not():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise OSError("Retryable commit conflict for version 7: another writer committed first")
        return "done"

    assert retry_commit(flaky, "a write", base_s=0.001) == "done" and len(calls) == 3
    calls.clear()

    def broken():
        calls.append(1)
        raise ValueError("no such column: nope")

    with pytest.raises(ValueError):
        retry_commit(broken, "a write", base_s=0.001)
    assert len(calls) == 1
    with pytest.raises(RuntimeError, match="Commit conflict"):  # gave up after 2 attempts
        retry_commit(lambda: (_ for _ in ()).throw(RuntimeError("Commit conflict for version 3")), "a write", attempts=2, base_s=0.001)
