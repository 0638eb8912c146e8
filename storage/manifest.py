"""The source manifest: for each file an ingestion read, the stat it had and what the
chunks table held of it, so the next run skips the file without reading it.

One LanceDB table per chunks table, ``manifest_<chunks table>``, one row per file
(key ``file_id``, the file's real path as ``readers.file_id`` makes it): ``size``,
``mtime_ns``, ``ino``, ``ctime_ns`` (kept, not compared: restoring a modification time
with ``os.utime`` is taken at its word, as make and rsync take it), ``stat_ns`` (the wall
clock just before that stat), ``n_docs`` and ``docs_hash`` (the documents the file gave:
a hash of their sorted ``(doc_id, content_hash)``), ``reader_sig`` (what turns bytes
into documents: grainline's version and the reader settings), ``written_ns``,
``run_id`` and ``etag``: for an object of an object store (``s3://bucket/key`` as its
``file_id``) the ETag of the bytes that were read, empty for a local file. A manifest
written before the column existed gets it (empty) on its next write. It is written only under the chunks table's write lock, by the run that
holds it, so it has one writer; it is read once per run, whole (a few columns).

When an entry lets a run skip a file, all of these hold (``ingest/manifest.py``):

1. the file's size, modification time and inode equal the entry's; for an object,
   its size and ETag equal the entry's (the listing's ETag against the one of the bytes
   read last time; times are not compared, so a clock skewed between the store and
   this machine changes nothing, and an entry without an ETag is never trusted for
   an object);
2. the entry is not *racy* (git's rule): the file's modification time is older than
   the moment of the stat minus :data:`RACY_MARGIN_NS`. A file written in the same
   tick of the file system's clock as it was stat'ed could change again and keep its
   modification time; such an entry is not trusted, the file is read and hashed, and
   the entry written again (then trusted). An object's ETag changes with every write
   that changes its bytes, so this rule does not apply to it;
3. the entry was written with the same ``reader_sig`` as this run's;
4. the chunks table holds exactly the file's documents, each with the hash the entry
   recorded under every chunker key of this run: checked against every document's
   state (grouping stored doc ids ``fid`` / ``fid#...`` by file), unless the last run
   that completed vouched for every entry in its ledger row and the table and this
   manifest are still at the versions it left them (``ingest/manifest.py``). So a chunk
   table restored to an older version (``grainline restore``), documents deleted by
   hand, a strategy this table never stored for the file, or rows written by another
   run all make the file read again: the manifest is a hint checked against the table,
   never a second truth. (Hence no chunker keys in the key: a run with other
   strategies finds their hashes missing and reads the file, without the two
   alternating runs rewriting each other's entries.)

An entry is written only once every document of the file is committed with the
hashes it records (checked against the same doc states the writes update), never for a
file with a failure, so a run killed at any point leaves entries that are true.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Iterable, NamedTuple

import pyarrow as pa

from grainline.documents import sha256_of

from .chunks import connect
from .commits import lance_errors, retry_commit
from .sql import in_list
from .tables import open_or_create, open_table_if_exists

log = logging.getLogger("grainline.storage")

MANIFEST_PREFIX = "manifest_"
# File systems keep modification times in ticks of up to 2 s (FAT; 1 s on HFS+ and
# some NFS servers; Linux's own clock ticks in milliseconds): a file modified within a
# tick of its stat may change again without its modification time moving.
RACY_MARGIN_NS = 2_000_000_000
# Compaction after a run once the manifest holds this many fragments (each flush of a
# run adds one); versions older than an hour are pruned then (nothing restores a
# manifest; the hour spares a dry run reading it meanwhile).
COMPACT_FRAGMENTS = 16
PRUNE_OLDER_THAN_S = 3600

MANIFEST_SCHEMA = pa.schema([
    pa.field("file_id", pa.string(), nullable=False),
    pa.field("size", pa.int64()),
    pa.field("mtime_ns", pa.int64()),
    pa.field("ino", pa.int64()),
    pa.field("ctime_ns", pa.int64()),
    pa.field("stat_ns", pa.int64()),
    pa.field("n_docs", pa.int64()),
    pa.field("docs_hash", pa.string()),
    pa.field("reader_sig", pa.string()),
    pa.field("written_ns", pa.int64()),
    pa.field("run_id", pa.string()),
    pa.field("etag", pa.string()),
])
# Columns a manifest written by an older grainline may lack, with the SQL that fills them.
_ADDED_COLUMNS = {"etag": "CAST('' AS STRING)"}


def manifest_table_name(chunks_table: str) -> str:
    """The manifest table of a chunks table."""
    return MANIFEST_PREFIX + chunks_table


def docs_hash(docs: Iterable[tuple[str, str]]) -> str:
    """One hash of a file's documents, ``(doc_id, content_hash)`` pairs in any order."""
    h = sha256_of("manifest-docs-v1")
    for doc_id, content_hash in sorted(docs):
        h.update(b"\x1e" + doc_id.encode("utf-8", "surrogatepass") + b"\x1f" + content_hash.encode())
    return h.hexdigest()[:32]


class ManifestEntry(NamedTuple):
    """One file of the manifest (see the module docstring). A named tuple: a run loads
    one per file of the source (100,000 frozen dataclasses took 0.15 s)."""

    file_id: str
    size: int
    mtime_ns: int
    ino: int
    ctime_ns: int
    stat_ns: int
    n_docs: int
    docs_hash: str
    reader_sig: str
    written_ns: int = 0
    run_id: str = ""
    etag: str = ""


_FIELDS = list(ManifestEntry._fields)


# What deciding to skip a file compares of its entry, in this order: the tuple
# :meth:`SourceManifest.stats` gives per file.
STAT_FIELDS = ("size", "mtime_ns", "ino", "stat_ns", "n_docs", "etag")
EntryStat = tuple  # (size, mtime_ns, ino, stat_ns, n_docs, etag)


class SourceManifest:
    """The manifest table of one chunks table."""

    def __init__(self, db_uri: str, chunks_table: str, storage_options: dict[str, str] | None = None) -> None:
        self.db_uri = db_uri
        self.table_name = manifest_table_name(chunks_table)
        self.db = connect(db_uri, storage_options)
        # The manifest table's version :meth:`load` read (None: no table then).
        self.loaded_version: int | None = None

    def version(self) -> int | None:
        """The manifest table's latest version (None when there is no table)."""
        t = open_table_if_exists(self.db, self.table_name)
        return None if t is None else t.version

    @lance_errors()
    def load(self) -> dict[str, ManifestEntry]:
        """Every entry, file_id -> entry, from one scan (empty when there is no table)."""
        t = open_table_if_exists(self.db, self.table_name)
        self.loaded_version = None if t is None else t.version
        if t is None:
            return {}
        have = set(t.schema.names)
        names = [f.name for f in MANIFEST_SCHEMA if f.name in have]
        out: dict[str, ManifestEntry] = {}
        for batch in t.search().select(names).limit(None).to_batches(65536):
            cols = batch.to_pydict()
            for n in _ADDED_COLUMNS:
                if n in cols:
                    cols[n] = ["" if v is None else v for v in cols[n]]
            # Positional: the schema's columns are the entry's fields, in order (a
            # keyword dict per row was most of loading 100,000 entries).
            if names == _FIELDS[:len(names)]:
                for row in zip(*(cols[n] for n in names)):
                    out[row[0]] = ManifestEntry(*row)
                continue
            for row in zip(*(cols[n] for n in names)):
                e = ManifestEntry(**dict(zip(names, row)))
                out[e.file_id] = e
        return out

    @lance_errors()
    def stats(self, reader_sig: str) -> tuple[set[str], dict[str, EntryStat]]:
        """Every entry's file id, and the stat of each entry written under
        ``reader_sig``: what a run that trusts the manifest without checking it needs.
        Six columns (:data:`STAT_FIELDS`, as plain tuples), filtered by Arrow and
        zipped in C, no entry built: 0.1 s for 100,000 entries, where :meth:`load`
        takes 0.3 s. Sets :attr:`loaded_version`."""
        import pyarrow.compute as pc

        t = open_table_if_exists(self.db, self.table_name)
        self.loaded_version = None if t is None else t.version
        if t is None:
            return set(), {}
        have = set(t.schema.names)
        names = ["file_id", "reader_sig", *(n for n in STAT_FIELDS if n in have)]
        data = t.search().select(names).limit(None).to_arrow()
        ids = data.column("file_id").to_pylist()
        mine = data.filter(pc.equal(data.column("reader_sig"), reader_sig))
        cols = [mine.column(n).to_pylist() if n in have else [""] * mine.num_rows for n in STAT_FIELDS]
        if "etag" in have:
            cols[-1] = ["" if v is None else v for v in cols[-1]]
        # Usually every entry has this signature: the ids are those already listed.
        mine_ids = ids if mine.num_rows == len(ids) else mine.column("file_id").to_pylist()
        return set(ids), dict(zip(mine_ids, zip(*cols)))

    def write(self, entries: list[ManifestEntry], run_id: str) -> int:
        """Insert or replace these entries (upsert on file_id), stamped with the wall
        clock and ``run_id``, in one commit; returns how many."""
        if not entries:
            return 0
        now = time.time_ns()
        rows = [{**e._asdict(), "written_ns": now, "run_id": run_id} for e in entries]
        data = pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA)
        table = open_or_create(self.db, self.db_uri, self.table_name, MANIFEST_SCHEMA)
        missing = {n: sql for n, sql in _ADDED_COLUMNS.items() if n not in table.schema.names}
        if missing:
            # One writer (the chunks table's lock holder): no race on the schema.
            retry_commit(lambda: table.add_columns(missing), f"source manifest {self.table_name}")
        retry_commit(lambda: table.merge_insert("file_id").when_matched_update_all().when_not_matched_insert_all().execute(data),
                     f"source manifest {self.table_name}")
        return len(entries)

    def delete(self, file_ids: list[str]) -> None:
        """Drop the entries of these files (gone from the source)."""
        t = open_table_if_exists(self.db, self.table_name)
        if t is None or not file_ids:
            return
        ids = sorted(file_ids)
        for i in range(0, len(ids), 2000):
            where = in_list("file_id", ids[i:i + 2000])
            retry_commit(lambda: t.delete(where), f"source manifest {self.table_name}")

    def compact_if_due(self) -> bool:
        """Merge the manifest's fragments and prune its old versions once it holds
        :data:`COMPACT_FRAGMENTS` fragments; returns whether it did."""
        from datetime import timedelta

        t = open_table_if_exists(self.db, self.table_name)
        if t is None:
            return False
        with lance_errors():
            st: Any = t.stats()
            frag = st["fragment_stats"] if isinstance(st, dict) else st.fragment_stats
            n = int(frag["num_fragments"] if isinstance(frag, dict) else frag.num_fragments)
            if n < COMPACT_FRAGMENTS:
                return False
            t.optimize(cleanup_older_than=timedelta(seconds=PRUNE_OLDER_THAN_S))
        return True
