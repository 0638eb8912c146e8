"""The source manifest (storage/manifest.py, ingest/manifest.py): a re-run skips the
files whose stat is unchanged, reads the edited ones, the racy ones and those the table
no longer holds as recorded, and a full sync deletes only what is gone. Real LanceDB
tables in tmp_path, the bundled model; counts, not timings (``files_read``)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from grainline.documents import Document, FileRead, Unchanged
from grainline.embedding import EmbedderSettings
from grainline.ingest import IngestSettings, run_ingest
from grainline.ingest.run import finish, prepare, run_batches
from grainline.readers import open_source, register_reader
from grainline.readers.registry import READERS
from grainline.readers.source import CHANGED_WHILE_READ
from grainline.storage.chunks import connect
from grainline.storage.ledger import RunCounts
from grainline.storage.manifest import SourceManifest
from grainline.storage.sql import quote

from ..conftest import write_files

HOUR_AGO = time.time() - 3600


def corpus(root: Path, extra: dict[str, str] | None = None) -> Path:
    """Three small text files and a JSONL file of two records, modified an hour ago
    (so no entry is racy)."""
    files = {
        "a.txt": "Bees dance to tell the hive where flowers are.\n",
        "b.txt": "Sourdough needs a living culture of wild yeast.\n",
        "c.txt": "Public keys let strangers exchange secret messages.\n",
        "recs.jsonl": '{"id": "r1", "text": "Glaciers carve valleys over millennia."}\n'
                      '{"id": "r2", "text": "Copper conducts heat and electricity well."}\n',
        **(extra or {}),
    }
    write_files(root, files)
    for rel in files:
        os.utime(root / rel, (HOUR_AGO, HOUR_AGO))
    return root


def settings(src: Path, db: Path, **kw) -> IngestSettings:
    return IngestSettings(source=str(src), db=str(db), strategies=["sentence", "paragraph"], export_parquet=False,
                          embedder=EmbedderSettings(device="cpu", show_progress=False), **kw)


def edit(path: Path, text: str) -> None:
    """New content, and a new modification time that is still well in the past."""
    path.write_text(text)
    t = HOUR_AGO + 60
    os.utime(path, (t, t))


def same_size_edit(path: Path, text: str) -> None:
    """Replace the content (same size) and put the modification time back."""
    st = os.stat(path)
    assert len(text.encode()) == st.st_size
    path.write_text(text)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def doc_ids(db: Path, table: str) -> set[str]:
    return set(connect(str(db)).open_table(table).to_arrow().column("doc_id").to_pylist())


def test_unchanged_rerun_reads_no_file_and_an_edit_is_read(tmp_path):
    src, db = corpus(tmp_path / "src"), tmp_path / "db"
    first = run_ingest(settings(src, db))
    assert (first.counts.files_read, first.counts.files_unchanged, first.counts.docs_added) == (4, 0, 5)
    entries = SourceManifest(str(db), first.table_name).load()
    assert set(entries) == {str((src / n).resolve()) for n in ("a.txt", "b.txt", "c.txt", "recs.jsonl")}
    assert entries[str((src / "recs.jsonl").resolve())].n_docs == 2

    again = run_ingest(settings(src, db))
    c = again.counts
    assert (c.files_read, c.files_unchanged, c.docs_seen, c.docs_unchanged) == (0, 4, 5, 5)
    assert again.version_after == again.version_before

    # (b) An edit (a new modification time) is read and updated; the rest stay unread.
    edit(src / "b.txt", "Sourdough needs a living culture of wild yeast, fed daily.\n")
    edited = run_ingest(settings(src, db))
    c = edited.counts
    assert (c.files_read, c.files_unchanged, c.docs_updated, c.docs_unchanged) == (1, 3, 1, 4)
    assert run_ingest(settings(src, db)).counts.files_read == 0

    # A stat that stays while the bytes change is trusted (the point of a stat check);
    # --rehash reads every file and finds the change.
    same_size_edit(src / "a.txt", "Bees dance to tell the hive where water is!!!!\n")
    assert run_ingest(settings(src, db)).counts.docs_updated == 0
    rehashed = run_ingest(settings(src, db, rehash=True))
    assert (rehashed.counts.files_read, rehashed.counts.files_unchanged, rehashed.counts.docs_updated) == (4, 0, 1)


def test_racy_entry_is_read_again(tmp_path):
    """(c) A file whose modification time is not older than the stat that recorded it
    (minus the clock-tick margin) may have changed since without its stat moving: it is
    read again, however often, until its modification time is safely in the past."""
    src, db = corpus(tmp_path / "src"), tmp_path / "db"
    # Written "now" by a clock ahead (by ten minutes, so however slowly a loaded machine
    # gets to the stat, the entry stays racy).
    ahead = time.time_ns() + 600 * 10**9
    os.utime(src / "a.txt", ns=(ahead, ahead))
    first = run_ingest(settings(src, db))
    entry = SourceManifest(str(db), first.table_name).load()[str((src / "a.txt").resolve())]
    assert entry.mtime_ns == ahead and entry.mtime_ns >= entry.stat_ns - 2 * 10**9

    same_size_edit(src / "a.txt", "Bees dance to tell the hive where water is!!!!\n")
    second = run_ingest(settings(src, db))
    assert (second.counts.files_read, second.counts.files_unchanged, second.counts.docs_updated) == (1, 3, 1)


def test_full_sync_deletes_only_the_deleted_file(tmp_path):
    """(d) The documents of files skipped unread (a record file's too) are not gone."""
    src, db = corpus(tmp_path / "src"), tmp_path / "db"
    first = run_ingest(settings(src, db))
    (src / "c.txt").unlink()
    synced = run_ingest(settings(src, db, sync="full"))
    c = synced.counts
    assert (c.files_read, c.files_unchanged, c.docs_deleted) == (0, 3, 1)
    kept = {str((src / n).resolve()) for n in ("a.txt", "b.txt")} | {str((src / "recs.jsonl").resolve()) + r for r in ("#r1", "#r2")}
    assert doc_ids(db, first.table_name) == kept
    assert str((src / "c.txt").resolve()) not in SourceManifest(str(db), first.table_name).load()


def test_table_that_disagrees_with_the_manifest_is_read_again(tmp_path):
    """(e) Rows deleted by hand, and a table restored to an older version: the files
    whose documents the table no longer holds as recorded are read again."""
    src, db = corpus(tmp_path / "src"), tmp_path / "db"
    first = run_ingest(settings(src, db))
    table = connect(str(db)).open_table(first.table_name)
    b = str((src / "b.txt").resolve())
    table.delete(f"doc_id = {quote(b)} AND strategy = 'sentence'")
    healed = run_ingest(settings(src, db))
    c = healed.counts
    assert (c.files_read, c.files_unchanged, c.docs_updated) == (1, 3, 1)
    # The table moved past the version the first run vouched at: every entry was checked.
    assert _trust(first) == "checked" and _trust(healed) == ""
    assert run_ingest(settings(src, db)).counts.files_read == 0

    edit(src / "a.txt", "Bees dance to tell the hive where flowers and water are.\n")
    before_edit = healed.version_after
    assert run_ingest(settings(src, db)).counts.docs_updated == 1
    table = connect(str(db)).open_table(first.table_name)
    table.checkout(before_edit)
    table.restore()  # what `grainline restore` does: a.txt's old text is stored again
    after_restore = run_ingest(settings(src, db))
    c = after_restore.counts
    assert (c.files_read, c.files_unchanged, c.docs_updated) == (1, 3, 1)
    assert _trust(after_restore) == ""


def _trust(rec) -> str | None:
    """How the run's ledger row says its entries were found true at load ("vouched",
    "checked"); "" when the run did not vouch for the manifest, None without a row."""
    v = rec.parameters.get("source_manifest")
    return "" if v is None else v["trust"]


def _sig(entries) -> str:
    (sig,) = {e.reader_sig for e in entries.values()}
    return sig


def _same_stats(stats, entries, trusted: bool = True) -> bool:
    """Whether ``SourceManifest.stats`` knows exactly these entries (one signature), and
    gives each one's stat when ``trusted`` (asked under that signature), else none."""
    want = {f: (e.size, e.mtime_ns, e.ino, e.stat_ns, e.n_docs, e.etag) if trusted else None for f, e in entries.items()}
    return (len(stats) == len(entries) and stats.trusted == (len(entries) if trusted else 0)
            and all(stats.knows(f) and stats.get(f) == st for f, st in want.items())
            and not stats.knows("/no/such/file") and stats.get("/no/such/file") is None)


def _run(s: IngestSettings):
    """An ingestion by its three phases, to look at the run's document states."""
    ctx = prepare(s)
    counts = RunCounts()
    run_batches(ctx, counts)
    return ctx, finish(ctx, counts)


def test_a_completed_run_vouches_and_the_next_reads_no_document_state(tmp_path):
    """The first run checks every entry against the table's document states and vouches
    in the ledger for the manifest at the version it leaves the table. The next run,
    with the table and the manifest as that run left them, trusts every entry without
    reading any document's state (no lookup, no scan of the table), and an edit looks up
    its own document's state alone."""
    src, db = corpus(tmp_path / "src"), tmp_path / "db"
    s = settings(src, db)
    first = run_ingest(s)
    assert _trust(first) == "checked"
    assert first.parameters["source_manifest"]["keys"] == sorted(first.parameters["chunker_keys"])

    manifest = SourceManifest(str(db), first.table_name)
    entries = manifest.load()
    assert _same_stats(manifest.stats(_sig(entries)), entries) and _same_stats(manifest.stats("other"), entries, trusted=False)
    ctx, rec = _run(s)
    assert (rec.counts.files_unchanged, rec.counts.files_read) == (4, 0)
    assert (ctx.states.whole, ctx.states.lookups) == (False, 0)
    assert _trust(rec) == "vouched" and rec.version_after == first.version_after

    edit(src / "a.txt", "Bees dance to tell the hive where clover grows.\n")
    ctx, rec = _run(s)
    assert (rec.counts.files_read, rec.counts.docs_updated, rec.counts.docs_unchanged) == (1, 1, 4)
    assert (ctx.states.whole, ctx.states.lookups) == (False, 1)
    assert _trust(rec) == "vouched"

    # Another chunker setting than the vouch names: each entry is checked again.
    other = run_ingest(settings(src, db, chunker_overrides={"paragraph": {"max_tokens": 200}}))
    assert _trust(other) == "" and other.counts.files_read == 4


def test_a_file_read_without_its_entry_written_loses_the_old_one(tmp_path):
    """recs.jsonl is edited: its first record changes and its second no longer parses.
    The run stores the first record's new text, fails the second, and writes no entry
    for the file; its old entry no longer says what the table holds, so it is dropped.
    When the old bytes come back with their old times (a backup restored as rsync -t
    restores one), the file is read again, not skipped on the vouch of the last run."""
    src, db = corpus(tmp_path / "src"), tmp_path / "db"
    s = settings(src, db)
    run_ingest(s)
    recs = src / "recs.jsonl"
    old_bytes, st = recs.read_bytes(), os.stat(recs)
    edit(recs, '{"id": "r1", "text": "Glaciers carve fjords over millennia."}\nnot json\n')
    bad = run_ingest(s)
    assert (bad.counts.files_read, bad.counts.docs_updated, bad.counts.docs_failed) == (1, 1, 1)
    assert str(recs.resolve()) not in SourceManifest(str(db), bad.table_name).load()
    assert _trust(bad) == "vouched"

    with open(recs, "r+b") as fh:  # in place: the same inode
        fh.write(old_bytes)
        fh.truncate()
    os.utime(recs, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (os.stat(recs).st_size, os.stat(recs).st_mtime_ns, os.stat(recs).st_ino) == (st.st_size, st.st_mtime_ns, st.st_ino)
    back = run_ingest(s)
    assert (back.counts.files_read, back.counts.docs_updated) == (1, 1)
    texts = connect(str(db)).open_table(back.table_name).search().where("strategy = 'sentence'").select(["text"]).limit(None).to_arrow()
    assert "Glaciers carve valleys over millennia." in texts.column("text").to_pylist()


def test_a_failed_file_gets_no_entry(tmp_path):
    """A file with any failure (one bad record) is read again on every run."""
    src, db = corpus(tmp_path / "src", {"bad.jsonl": '{"id": "x", "text": "Fine record here."}\nnot json\n'}), tmp_path / "db"
    os.utime(src / "bad.jsonl", (HOUR_AGO, HOUR_AGO))
    first = run_ingest(settings(src, db))
    assert first.counts.docs_failed == 1
    assert str((src / "bad.jsonl").resolve()) not in SourceManifest(str(db), first.table_name).load()
    again = run_ingest(settings(src, db))
    assert (again.counts.files_read, again.counts.files_unchanged, again.counts.docs_failed) == (1, 4, 1)


@pytest.fixture
def moving_reader():
    """A reader for ``.moving`` files that appends to the file while reading it, the
    first ``moves`` times it is called."""
    state = {"moves": 0}

    @register_reader(".moving")
    def read_moving(path, root, settings):
        text = path.read_text()
        if state["moves"] > 0:
            state["moves"] -= 1
            with open(path, "a") as fh:
                fh.write("x")
        yield Document(path.relative_to(root).as_posix(), text)

    yield state
    del READERS[".moving"]


def test_a_file_that_moves_while_read_is_read_again_then_fails(tmp_path, moving_reader):
    src = write_files(tmp_path / "src", {"m.moving": "first text"})
    ask = lambda fid, st: None  # noqa: E731 - the manifest knows nothing: read every file
    moving_reader["moves"] = 1
    items = list(open_source(src, None, ask)[1])
    assert [type(i) for i in items] == [Document, FileRead]
    assert items[0].text == "first textx" and items[1].complete and items[1].stat.size == len("first textx")

    moving_reader["moves"] = 2
    items = list(open_source(src, None, ask)[1])
    assert [getattr(i, "reason", None) for i in items[:1]] == [CHANGED_WHILE_READ]
    assert isinstance(items[1], FileRead) and not items[1].complete and len(items) == 2


def test_the_predicate_is_asked_with_the_stat_and_skips_reading(tmp_path, moving_reader):
    src = write_files(tmp_path / "src", {"m.moving": "some text"})
    asked = []
    items = list(open_source(src, None, lambda fid, st: asked.append((fid, st.size)) or 3)[1])
    assert asked == [(str((src / "m.moving").resolve()), 9)]
    assert items == [Unchanged(str((src / "m.moving").resolve()), "m.moving", 3)]


def test_a_document_that_fails_chunking_leaves_its_file_without_entry(tmp_path):
    """An entry is written only once the file's documents are committed: one whose
    document failed at chunking (too many chunks) has none, and is read again."""
    from grainline.readers import ReaderSettings

    long = " ".join(f"Sentence number {w} talks at some length about rivers, mountains and the weather." for w in
                    ("one", "two", "three", "four", "five")) + "\n"
    src, db = corpus(tmp_path / "src", {"long.txt": long}), tmp_path / "db"
    os.utime(src / "long.txt", (HOUR_AGO, HOUR_AGO))
    s = settings(src, db, reader=ReaderSettings(max_chunks_per_doc=2))
    first = run_ingest(s)
    assert first.counts.docs_failed == 1 and first.counts.failures[0]["stage"] == "chunk"
    assert str((src / "long.txt").resolve()) not in SourceManifest(str(db), first.table_name).load()
    again = run_ingest(s)
    assert (again.counts.files_read, again.counts.files_unchanged, again.counts.docs_failed) == (1, 4, 1)


def test_entries_flushed_during_the_run(tmp_path, monkeypatch):
    """Flushed at every batch (not only at the end, so a killed run keeps most of
    them): each flush writes the files whose documents are committed by then."""
    from grainline.ingest import manifest as run_manifest

    monkeypatch.setattr(run_manifest, "FLUSH_EVERY_S", 0.0)
    src, db = corpus(tmp_path / "src"), tmp_path / "db"
    first = run_ingest(settings(src, db, batch_docs=1))
    store = SourceManifest(str(db), first.table_name)
    assert len(store.load()) == 4
    versions = connect(str(db)).open_table(store.table_name).list_versions()
    assert len(versions) >= 4  # created, then one commit per flush that had entries
    assert run_ingest(settings(src, db, batch_docs=1)).counts.files_unchanged == 4


def test_an_object_entry_is_trusted_by_its_etag_alone():
    """An object's listed ETag (and size) against the entry's: its last-modified time,
    however far a clock is off, and the racy rule play no part; an entry without an
    ETag (a local file's) never vouches for an object."""
    from grainline.documents import FileStat
    from grainline.ingest.manifest import ManifestRun
    from grainline.storage.manifest import ManifestEntry

    now = time.time_ns()
    fid = "s3://bucket/docs/a.txt"
    entry = ManifestEntry(file_id=fid, size=10, mtime_ns=now, ino=0, ctime_ns=0, stat_ns=now, n_docs=2,
                          docs_hash="h", reader_sig="sig", etag='"e1"')
    run = ManifestRun()
    run.trust_entries({fid: entry})
    skewed = now + 3600 * 10**9  # the store's clock an hour ahead; written "now" (racy for a file)
    assert run.unchanged(fid, FileStat(10, skewed, 0, 0, now, etag='"e1"')) == 2
    assert run.unchanged(fid, FileStat(10, now, 0, 0, now, etag='"e2"')) is None
    assert run.unchanged(fid, FileStat(11, now, 0, 0, now, etag='"e1"')) is None
    run.trust_entries({fid: entry._replace(etag="")})
    assert run.unchanged(fid, FileStat(10, now, 0, 0, now, etag='"e1"')) is None
    assert ManifestRun(rehash=True).unchanged(fid, FileStat(10, now, 0, 0, now, etag='"e1"')) is None


def test_a_manifest_from_before_the_etag_column_is_read_then_given_it(tmp_path):
    """A manifest table written without ``etag`` loads (entries with an empty ETag, so
    local files keep being skipped) and gets the column at its next write."""
    import pyarrow as pa

    from grainline.storage.manifest import MANIFEST_SCHEMA, ManifestEntry

    src, db = corpus(tmp_path / "src"), tmp_path / "db"
    first = run_ingest(settings(src, db))
    store = SourceManifest(str(db), first.table_name)
    entries = store.load()
    old_schema = pa.schema([f for f in MANIFEST_SCHEMA if f.name != "etag"])
    rows = [{k: v for k, v in e._asdict().items() if k != "etag"} for e in entries.values()]
    conn = connect(str(db))
    conn.drop_table(store.table_name)
    conn.create_table(store.table_name, pa.Table.from_pylist(rows, schema=old_schema))
    assert "etag" not in conn.open_table(store.table_name).schema.names
    assert store.load() == entries
    assert _same_stats(store.stats(_sig(entries)), entries)
    assert run_ingest(settings(src, db)).counts.files_unchanged == 4

    edit(src / "a.txt", "Bees dance to tell the hive where clover grows.\n")
    assert run_ingest(settings(src, db)).counts.files_read == 1
    assert "etag" in connect(str(db)).open_table(store.table_name).schema.names
    assert len(store.load()) == 4 and all(e.etag == "" for e in store.load().values())
    store.write([ManifestEntry(**{**entries[next(iter(entries))]._asdict(), "etag": '"x"'})], "run-x")
    assert '"x"' in {e.etag for e in store.load().values()}


def test_a_run_holds_the_states_of_the_files_in_hand_not_of_all_it_read(tmp_path, monkeypatch):
    """A first ingestion of 24 files, two a batch, the manifest flushed every 3 files:
    once a file's entry is written its documents' states are let go, so at the end of
    the batches the run holds at most the states of the files since the last flush and
    of the last batch, not 24; it holds no set of the files it read (none had an
    entry). A full sync after one file is deleted still finds exactly that one gone,
    with the states let go (it reads the table's ids instead)."""
    import grainline.ingest.manifest as manifest_run

    monkeypatch.setattr(manifest_run, "FLUSH_EVERY_FILES", 3)
    src, db = tmp_path / "src", tmp_path / "db"
    files = {f"f{i:02d}.txt": f"Document number {i} holds the number {i * 7919}.\n" for i in range(24)}
    write_files(src, files)
    for rel in files:
        os.utime(src / rel, (HOUR_AGO, HOUR_AGO))
    s = settings(src, db, batch_docs=2)
    ctx = prepare(s)
    counts = RunCounts()
    run_batches(ctx, counts)
    assert counts.docs_added == 24
    assert ctx.states.held <= 3 + 2 and not ctx.states.whole
    assert ctx.manifest.read_unwritten == set() and len(ctx.manifest.files_seen) == 24
    finish(ctx, counts)

    (src / "f05.txt").unlink()
    ctx, rec = _run(settings(src, db, batch_docs=2, sync="full"))
    assert (rec.counts.files_unchanged, rec.counts.files_read, rec.counts.docs_deleted) == (23, 0, 1)
    stored = SourceManifest(str(db), rec.table_name).load()
    assert sorted(Path(f).name for f in stored) == sorted(set(files) - {"f05.txt"})


def test_entry_stats_of_a_batch_with_two_signatures_and_some_etags():
    """``EntryStats.extend`` (how a vouched run loads the manifest) gives what one entry
    at a time gives: the other signature's entries known but not trusted, ETags kept
    once any entry has one, nulls read as 0."""
    import numpy as np

    from grainline.storage.manifest import EntryStats

    ids = ["/a.txt", "s3://b/k.txt", "/old.txt", "/c.txt"]
    trusted = np.array([True, True, False, True])
    cols = [np.array(v, dtype=np.int64) for v in ([1, 2, 4], [10, 20, 40], [7, 0, 9], [5, 6, 8], [1, 3, 1])]
    batch = EntryStats()
    batch.extend(ids[:2], trusted[:2], [c[:2] for c in cols], None)
    batch.extend(ids[2:], trusted[2:], [c[2:] for c in cols], ['"e4"'])
    one = EntryStats()
    one.add("/a.txt", 1, 10, 7, 5, 1, "")
    one.add("s3://b/k.txt", 2, 20, None, 6, 3, None)
    one.know("/old.txt")
    one.add("/c.txt", 4, 40, 9, 8, 1, '"e4"')
    for stats in (batch, one):
        assert [stats.get(f) for f in ids] == [(1, 10, 7, 5, 1, ""), (2, 20, 0, 6, 3, ""), None, (4, 40, 9, 8, 1, '"e4"')]
        assert all(stats.knows(f) for f in ids) and not stats.knows("/d.txt")
        assert (len(stats), stats.trusted) == (4, 3)


def test_a_vouched_run_does_not_look_for_ids_of_an_older_grainline(tmp_path, monkeypatch):
    """Looking for ids an older grainline made relative to the root is a filtered scan
    of the whole table. The run that finds none says so in its vouch; the next run,
    with the table still where that run left it, does not look again. A write by
    anything else (here a hand delete) moves the version, and the run looks."""
    from grainline.storage.chunks import ChunkStore

    calls = []
    real = ChunkStore.relative_ids
    monkeypatch.setattr(ChunkStore, "relative_ids", lambda self, root: calls.append(root) or real(self, root))
    src, db = corpus(tmp_path / "src"), tmp_path / "db"
    s = settings(src, db)
    first = run_ingest(s)
    assert len(calls) == 1 and first.parameters["source_manifest"]["no_legacy_ids_under"] == str(src.resolve())
    again = run_ingest(s)
    assert len(calls) == 1 and _trust(again) == "vouched" and again.counts.files_unchanged == 4

    connect(str(db)).open_table(first.table_name).delete(f"doc_id = {quote(str((src / 'c.txt').resolve()))}")
    third = run_ingest(s)
    assert len(calls) == 2 and third.counts.files_read == 1 and third.counts.docs_added == 1
