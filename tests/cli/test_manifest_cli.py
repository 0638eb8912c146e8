"""The source manifest as a user meets it: ``grainline ingest`` run again over an
unchanged folder reads no file (the summary and the ledger say so), a file whose
bytes were replaced but whose stat was put back is not read (proof that the stat alone
decides), and ``--rehash`` reads every file again. The CLI in a subprocess."""

from __future__ import annotations

import os
import time

from grainline.storage.ledger import Ledger

from ..conftest import write_files
from .test_cli_faults import grainline, ingest_args


def _old_files(src, files: dict[str, str]) -> None:
    """Write ``files`` under ``src``, modified an hour ago (so no manifest entry is racy)."""
    write_files(src, files)
    hour_ago = time.time() - 3600
    for rel in files:
        os.utime(src / rel, (hour_ago, hour_ago))


def test_unchanged_rerun_reads_no_file_and_rehash_reads_them_all(tmp_path):
    src, db = tmp_path / "src", tmp_path / "db"
    _old_files(src, {"a.txt": "Bees dance to tell the hive where flowers are.\n",
                     "b.txt": "Sourdough needs a living culture of wild yeast.\n",
                     "c.txt": "Public keys let strangers exchange secret messages.\n"})

    first = grainline(tmp_path, *ingest_args(src, db))
    assert first.returncode == 0, first.stderr[-3000:]
    assert "files: 3 read, 0 unchanged by stat (not read)" in first.stdout

    again = grainline(tmp_path, *ingest_args(src, db))
    assert again.returncode == 0, again.stderr[-3000:]
    assert "documents: 3 seen, 0 added, 0 updated, 3 unchanged, 0 deleted, 0 failed" in again.stdout
    assert "files: 0 read, 3 unchanged by stat (not read)" in again.stdout
    row = Ledger(str(db)).runs("ingest")[-1]
    assert (row["files_read"], row["files_unchanged"], row["docs_unchanged"]) == (0, 3, 3)
    # It trusted the first run's vouch: no document state read, and no scan of the
    # table for ids of an older grainline (the first run found none under this root).
    vouch = row["parameters"]["source_manifest"]
    assert vouch["trust"] == "vouched" and vouch["no_legacy_ids_under"] == os.path.realpath(src), vouch

    # NUL bytes fail any read of a .txt file: the same size and modification time put
    # back, the run does not read it, so nothing fails.
    a = src / "a.txt"
    st = os.stat(a)
    a.write_bytes(b"\0" * st.st_size)
    os.utime(a, ns=(st.st_atime_ns, st.st_mtime_ns))
    unread = grainline(tmp_path, *ingest_args(src, db))
    assert unread.returncode == 0, unread.stderr[-3000:]
    assert "0 failed" in unread.stdout and "files: 0 read, 3 unchanged by stat" in unread.stdout

    rehashed = grainline(tmp_path, *ingest_args(src, db, "--rehash"))
    assert rehashed.returncode == 0, rehashed.stderr[-3000:]
    assert "files: 3 read, 0 unchanged by stat" in rehashed.stdout
    assert "FAILED a.txt (read): binary content (NUL bytes), not text" in rehashed.stdout


def test_a_full_sync_deletes_the_file_gone_among_files_skipped_unread(tmp_path):
    """A full sync through the CLI over files it skips unread, a records file whose ids
    hold a '#', and one file deleted: exactly that file's document goes, from the
    table and from the manifest (what the run holds of the files it met are hashes,
    asked at its end)."""
    from grainline.storage.manifest import SourceManifest

    src, db = tmp_path / "src", tmp_path / "db"
    _old_files(src, {"a.txt": "Bees dance to tell the hive where flowers are.\n",
                     "sub/b.txt": "Sourdough needs a living culture of wild yeast.\n",
                     "recs.jsonl": '{"id": "r1", "text": "Glaciers carve valleys."}\n{"id": "r2", "text": "Copper conducts heat."}\n'})
    first = grainline(tmp_path, *ingest_args(src, db))
    assert first.returncode == 0, first.stderr[-3000:]
    (src / "sub/b.txt").unlink()
    synced = grainline(tmp_path, *ingest_args(src, db, "--sync", "full"))
    assert synced.returncode == 0, synced.stderr[-3000:]
    assert "documents: 3 seen, 0 added, 0 updated, 3 unchanged, 1 deleted, 0 failed" in synced.stdout, synced.stdout
    assert "files: 0 read, 2 unchanged by stat (not read)" in synced.stdout
    row = Ledger(str(db)).runs("ingest")[-1]
    entries = SourceManifest(str(db), row["table_name"]).load()
    assert sorted(os.path.relpath(f, os.path.realpath(src)) for f in entries) == ["a.txt", "recs.jsonl"]
