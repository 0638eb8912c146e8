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
holds it, so it has one writer; it is read once per run, a batch of rows at a time, into
a compact map of the stats (:class:`EntryStats`, about 160 bytes a file).

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
from array import array
from typing import Any, Container, Iterable, Iterator, NamedTuple

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
# :meth:`EntryStats.get` gives per file.
STAT_FIELDS = ("size", "mtime_ns", "ino", "stat_ns", "n_docs", "etag")
EntryStat = tuple  # (size, mtime_ns, ino, stat_ns, n_docs, etag)


class EntryStats:
    """The manifest as a run consults it, one row per file, compact: which files have
    an entry (:meth:`knows`) and the stat of each entry the run may trust (:meth:`get`).

    Files are keyed by the 64-bit ``hash`` of their id, the stats held in arrays: about
    160 bytes a file (``tracemalloc``, 100,000 entries), where a set of the ids and a
    dict of stat tuples took about 420 with the id strings (a million files: 160 MB
    rather than 420). Two ids sharing a hash (about 3 in 100
    million runs at a million files; ``hash`` is seeded per process) cannot make a run
    skip a file it should read: the file's own size, modification time and inode (an
    object's ETag) must still equal the entry's."""

    __slots__ = ("_rows", "_cols", "_etags", "trusted")

    def __init__(self) -> None:
        self._rows: dict[int, int] = {}  # hash(file_id) -> row of the stats; -1: known, not trusted
        self._cols = tuple(array("q") for _ in STAT_FIELDS[:-1])
        self._etags: list[str] | None = None  # None while every entry's ETag is empty (local files)
        self.trusted = 0

    def know(self, file_id: str) -> None:
        """An entry the run may not trust (another reader signature, or not true)."""
        self._rows.setdefault(hash(file_id), -1)

    def add(self, file_id: str, size: int, mtime_ns: int, ino: int, stat_ns: int, n_docs: int, etag: str | None) -> None:
        """An entry the run may trust, with its stat."""
        row = len(self._cols[0])
        for col, v in zip(self._cols, (size, mtime_ns, ino, stat_ns, n_docs)):
            col.append(v or 0)
        if etag and self._etags is None:
            self._etags = [""] * row
        if self._etags is not None:
            self._etags.append(etag or "")
        self._rows[hash(file_id)] = row
        self.trusted += 1

    def extend(self, ids: list[str], trusted: Any, cols: list[Any], etags: list[str] | None) -> None:
        """Many entries at once (a batch of the table): ``trusted`` a boolean per entry,
        ``cols`` the int64 arrays of :data:`STAT_FIELDS` but the ETag (numpy, the
        trusted entries' only), ``etags`` theirs (None: all empty). Built in C: a
        Python call per entry made loading 100,000 entries twice as slow."""
        hashes = list(map(hash, ids))
        n_trusted = int(trusted.sum())
        if n_trusted < len(ids):
            for h, ok in zip(hashes, trusted.tolist()):
                if not ok:
                    self._rows.setdefault(h, -1)
            hashes = [h for h, ok in zip(hashes, trusted.tolist()) if ok]
        base = len(self._cols[0])
        for col, values in zip(self._cols, cols):
            col.frombytes(values.astype("int64", copy=False).tobytes())
        if etags is not None and any(etags) and self._etags is None:
            self._etags = [""] * base
        if self._etags is not None:
            self._etags.extend(etags if etags is not None else [""] * n_trusted)
        self._rows.update(zip(hashes, range(base, base + n_trusted)))
        self.trusted += n_trusted

    def knows(self, file_id: str) -> bool:
        """Whether the manifest has an entry for the file (trusted or not)."""
        return hash(file_id) in self._rows

    def get(self, file_id: str) -> EntryStat | None:
        """The stat of the file's trusted entry (:data:`STAT_FIELDS`), or None."""
        row = self._rows.get(hash(file_id), -1)
        if row < 0:
            return None
        size, mtime_ns, ino, stat_ns, n_docs = self._cols
        return (size[row], mtime_ns[row], ino[row], stat_ns[row], n_docs[row],
                "" if self._etags is None else self._etags[row])

    def __len__(self) -> int:
        """How many files have an entry."""
        return len(self._rows)

    @classmethod
    def of(cls, entries: Iterable["ManifestEntry"], trusted: Container[str]) -> "EntryStats":
        """From whole entries, trusting those whose file id is in ``trusted``."""
        out = cls()
        for e in entries:
            if e.file_id in trusted:
                out.add(e.file_id, e.size, e.mtime_ns, e.ino, e.stat_ns, e.n_docs, e.etag)
            else:
                out.know(e.file_id)
        return out


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
    def stats(self, reader_sig: str) -> EntryStats:
        """What a run that trusts the manifest without checking it needs: every entry
        known, the stat of each written under ``reader_sig``, compact
        (:class:`EntryStats`). Read a batch of rows at a time, so the ids are never all
        held as strings. Sets :attr:`loaded_version`."""
        t = open_table_if_exists(self.db, self.table_name)
        self.loaded_version = None if t is None else t.version
        out = EntryStats()
        if t is None:
            return out
        import pyarrow.compute as pc

        have = set(t.schema.names)
        names = ["file_id", "reader_sig", *(n for n in STAT_FIELDS if n in have)]
        for batch in t.search().select(names).limit(None).to_batches(65536):
            mine = pc.fill_null(pc.equal(batch.column("reader_sig"), reader_sig), False)
            kept = batch.filter(mine)
            cols = [pc.fill_null(kept.column(n), 0).to_numpy(zero_copy_only=False) for n in STAT_FIELDS[:-1]]
            etags = None
            if "etag" in have:
                tags = pc.fill_null(kept.column("etag"), "")
                etags = tags.to_pylist() if pc.any(pc.not_equal(tags, "")).as_py() else None
            out.extend(batch.column("file_id").to_pylist(), mine.to_numpy(zero_copy_only=False), cols, etags)
        return out

    def file_ids(self) -> Iterator[list[str]]:
        """Every entry's file id, a batch at a time (for the files gone of a full sync)."""
        with lance_errors():
            t = open_table_if_exists(self.db, self.table_name)
            if t is None:
                return
            for batch in t.search().select(["file_id"]).limit(None).to_batches(65536):
                yield batch.column(0).to_pylist()

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
