"""The alias a database's readers go through (storage/alias.py): switched atomically under
its lock, each switch kept so undo moves back, a damaged file said rather than ignored,
and ingestion that follows it (ingest/plan.py follow_alias) takes its table and model
together."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import pytest

from grainline.storage.alias import (AliasError, AliasTarget, alias_lock, alias_path, export_link, read_alias, switch,
                                     undo)
from grainline.storage.lock_protocol import TableLockTimeout

A = AliasTarget("chunks_a_1", "all-MiniLM-L6-v2", "a@1", 384)
B = AliasTarget("chunks_b_2", "/models/b", "b@2", 384)
C = AliasTarget("chunks_c_3", "/models/c", "c@3", 384, precision="int8")


def test_no_alias_until_a_switch_then_undo_walks_back(tmp_path):
    db = str(tmp_path)
    assert read_alias(db) is None
    with alias_lock(db, 5) as lock:
        switch(db, A, B, "promote-1", lock)
        switch(db, B, C, "promote-2", lock)
    alias = read_alias(db)
    assert alias.target == C and alias.previous == [A, B]
    assert [(e["kind"], e["from"], e["to"]) for e in alias.history] == [("promote", A.table, B.table),
                                                                         ("promote", B.table, C.table)]
    assert export_link(db).is_symlink() and str(export_link(db).readlink()) == C.table
    with alias_lock(db, 5) as lock:
        frm, new = undo(db, "undo-1", lock)
        assert frm == C and new.target == B
        _, new = undo(db, "undo-2", lock)
        assert new.target == A and new.previous == []
        with pytest.raises(AliasError, match="no promotion left to undo"):
            undo(db, "undo-3", lock)
    assert read_alias(db).target == A and str(export_link(db).readlink()) == A.table
    assert sorted(p.name for p in tmp_path.iterdir()) == ["_alias.json", "_locks", "parquet"]  # no temporary file left


def test_a_switch_refuses_a_pointer_that_moved_and_one_without_the_lock(tmp_path):
    db = str(tmp_path)
    with alias_lock(db, 5) as lock:
        switch(db, A, B, "promote-1", lock)
        before = alias_path(db).read_bytes()
        with pytest.raises(AliasError, match="moved to 'chunks_b_2'"):
            switch(db, A, C, "promote-2", lock)  # judged against A, but B is production now
        with pytest.raises(AliasError, match="already is the production table"):
            switch(db, B, B, "promote-3", lock)
    lock.release()
    with pytest.raises(AliasError, match="only under its lock"):
        switch(db, B, C, "promote-4", lock)
    assert alias_path(db).read_bytes() == before


def test_undo_without_any_promotion_is_an_error(tmp_path):
    with alias_lock(str(tmp_path), 5) as lock, pytest.raises(AliasError, match="no alias"):
        undo(str(tmp_path), "undo-1", lock)


def test_a_damaged_alias_is_said_not_ignored(tmp_path):
    alias_path(str(tmp_path)).write_text('{"target": {"table": ')
    with pytest.raises(AliasError, match="_alias.json: the alias file is damaged"):
        read_alias(str(tmp_path))


def test_object_stores_have_no_alias_and_cannot_switch_one():
    assert read_alias("s3://bucket/db") is None
    with pytest.raises(AliasError, match="needs a local database"):
        alias_lock("s3://bucket/db", 1)


def test_readers_see_the_old_pointer_or_the_new_one_never_a_torn_one(tmp_path):
    db = str(tmp_path)
    seen: set[str] = set()
    errors: list[BaseException] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            try:
                alias = read_alias(db)
                if alias is not None:
                    seen.add(alias.target.table)
            except BaseException as exc:  # noqa: BLE001 - any torn read fails the test
                errors.append(exc)

    readers = [threading.Thread(target=read) for _ in range(2)]
    for t in readers:
        t.start()
    with alias_lock(db, 5) as lock:
        current = A
        for i in range(200):
            nxt = B if current == A else A
            switch(db, current, nxt, f"promote-{i}", lock)
            current = nxt
    stop.set()
    for t in readers:
        t.join()
    assert not errors and seen <= {A.table, B.table} and seen
    assert len(read_alias(db).history) == 50  # the file keeps the last 50; the ledger keeps all


def test_a_second_process_waits_for_the_alias_lock_and_gives_up_cleanly(tmp_path):
    db = str(tmp_path)
    code = ("import sys; from grainline.storage.alias import alias_lock\n"
            "from grainline.storage.lock_protocol import TableLockTimeout\n"
            "try:\n    alias_lock(sys.argv[1], 0.5).acquire()\nexcept TableLockTimeout as e:\n    print('timeout', e)\n")
    with alias_lock(db, 5):
        held = subprocess.run([sys.executable, "-c", code, db], capture_output=True, text=True, timeout=60)
    assert held.stdout.startswith("timeout") and "'_alias'" in held.stdout, held
    free = subprocess.run([sys.executable, "-c", code, db], capture_output=True, text=True, timeout=60)
    assert free.returncode == 0 and free.stdout == "", free
    assert issubclass(TableLockTimeout, TimeoutError)


def test_ingestion_that_follows_the_alias_takes_its_table_and_model_together(tmp_path):
    from grainline.embedding import EmbedderSettings
    from grainline.ingest import IngestSettings, follow_alias, table_name_for

    db = str(tmp_path)
    settings = IngestSettings(source=str(tmp_path), db=db, follow_alias=True,
                              embedder=EmbedderSettings(device="cpu", batch_size=8))
    with pytest.raises(ValueError, match="resolve the alias"):
        table_name_for(settings)  # never a table without the model that embeds for it
    assert follow_alias(settings) == settings.model_copy(update={"follow_alias": False})  # no alias: as before
    with alias_lock(db, 5) as lock:
        switch(db, A, C, "promote-1", lock)
    got = follow_alias(settings)
    assert got.table == C.table and table_name_for(got) == C.table
    assert (got.embedder.model, got.embedder.precision, got.embedder.device, got.embedder.batch_size) == (
        C.model, "int8", "cpu", 8)
    assert follow_alias(got) == got
    pinned = IngestSettings(source=str(tmp_path), db=db)  # a model named: the alias is not read
    assert follow_alias(pinned) == pinned
    assert json.loads(alias_path(db).read_text())["target"]["table"] == C.table
