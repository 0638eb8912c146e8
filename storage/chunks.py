"""The chunks table in LanceDB: one table per embedding model, rows keyed by chunk_id."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Iterator, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .commits import lance_errors
from .lance_import import import_lance, import_lancedb
from .lock_protocol import is_local
from .rows import RowStamp, chunk_rows
from .schema import chunks_schema
from .sql import in_list, quote
from .tables import open_or_create, open_table_if_exists  # noqa: F401  (open_table_if_exists re-exported)

from grainline.defaults import DEFAULT_DB  # noqa: E402,F401  (re-exported)
from grainline.documents import Chunk, Document
from grainline.memory import bound_native_memory


# Cache bounds of the one LanceDB session per process, in MiB. LanceDB's defaults (1 GiB
# of metadata and 6 GiB of index data, per connection) let a long ingestion's memory grow
# with every version it commits; bounded and shared, memory stays flat as the table grows.
METADATA_CACHE_MB = int(os.environ.get("GRAINLINE_LANCE_METADATA_CACHE_MB", "64"))
INDEX_CACHE_MB = int(os.environ.get("GRAINLINE_LANCE_INDEX_CACHE_MB", "512"))


@lru_cache(maxsize=1)
def lance_session() -> Any:
    """The LanceDB session every connection of this process shares (bounded caches)."""
    lancedb = import_lancedb()

    return lancedb.Session(
        index_cache_size_bytes=INDEX_CACHE_MB << 20, metadata_cache_size_bytes=METADATA_CACHE_MB << 20
    )


def connect(db_uri: str, storage_options: dict[str, str] | None = None) -> Any:
    """Open a LanceDB database: a local folder or any LanceDB URI (s3://, gs://, ...).
    Object-store credentials come from the environment, never from arguments."""
    if is_local(str(db_uri)):
        # Before Lance starts its I/O threads: how many, and glibc's arenas.
        bound_native_memory()
    lancedb = import_lancedb()

    return lancedb.connect(db_uri, storage_options=storage_options or None, session=lance_session())


@dataclass
class DocState:
    """What the table already holds for one document."""

    source_root: str
    hashes: dict[str, str] = field(default_factory=dict)  # chunker_key -> doc_hash


class ChunkStore:
    """Reads and writes one chunks table. Every write is a single LanceDB commit; its
    transient errors leave typed (``storage/commits.py``), so a task can retry them."""

    def __init__(self, db_uri: str, table_name: str, dim: int, storage_options: dict[str, str] | None = None) -> None:
        self.db_uri = db_uri
        self.table_name = table_name
        self.dim = dim
        self.schema = chunks_schema(dim)
        self.db = connect(db_uri, storage_options)
        self._table = open_table_if_exists(self.db, table_name)
        if self._table is not None:
            existing = self._table.schema.field("vector").type
            if getattr(existing, "list_size", dim) != dim:
                raise ValueError(
                    f"table {table_name!r} holds {existing.list_size}-d vectors but the model gives {dim}-d; "
                    "each model needs its own table"
                )

    @property
    def table(self) -> Any:
        if self._table is None:
            # Another writer (an evaluation, a second model's run) may be creating it too.
            self._table = open_or_create(self.db, self.db_uri, self.table_name, self.schema)
        return self._table

    @property
    def exists(self) -> bool:
        return self._table is not None

    def checkout(self, version: int) -> None:
        """Read the table as it was at ``version`` from now on (read-only)."""
        self.table.checkout(version)

    def version(self) -> int | None:
        return self._table.version if self._table is not None else None

    def count(self, where: str | None = None) -> int:
        return self._table.count_rows(where) if self._table is not None else 0

    def scan(self, columns: list[str], where: str | None = None, batch_size: int = 8192) -> Iterator[pa.RecordBatch]:
        """Stream selected columns, never the whole table at once."""
        if self._table is None:
            return iter(())
        q = self._table.search().select(columns).limit(None)
        if where:
            q = q.where(where)
        return iter(q.to_batches(batch_size))

    @lance_errors()
    def doc_states(self) -> dict[str, DocState]:
        """doc_id -> what is stored for it, from a scan of four small columns."""
        return _fold_states(self.scan(_STATE_COLUMNS))

    @lance_errors()
    def doc_states_of(self, doc_ids: list[str]) -> dict[str, DocState]:
        """What is stored for these documents (those the table holds), found through
        ``doc_id`` (its scalar index once maintenance built it): the cost follows the
        ids asked for, not the table (``storage/doc_states.py``)."""
        if not doc_ids or self._table is None:
            return {}
        return _fold_states(self.scan(_STATE_COLUMNS, in_list("doc_id", doc_ids)))

    @lance_errors()
    def doc_roots(self) -> dict[str, str]:
        """doc_id -> source_root of every stored document: a scan of two columns,
        deduplicated by Arrow, where :meth:`doc_states` folds four into objects."""
        out: dict[str, str] = {}
        for ids, roots in self.doc_roots_batches():
            out.update(zip(ids, roots))
        return out

    def doc_roots_batches(self) -> Iterator[tuple[list[str], list[str]]]:
        """:meth:`doc_roots` a batch of rows at a time, as (ids, roots) lists, each
        document once per batch (a document whose rows span two batches comes twice):
        for a caller that keeps only a few of them (the documents a full sync finds
        gone) and so holds a batch, not every stored id."""
        with lance_errors():
            for batch in self.scan(["doc_id", "source_root"], batch_size=65536):
                cols = pa.Table.from_batches([batch]).group_by(["doc_id", "source_root"], use_threads=False).aggregate([])
                yield cols.column("doc_id").to_pylist(), cols.column("source_root").to_pylist()

    @lance_errors()
    def relative_ids(self, source_root: str) -> list[str]:
        """Ids of ``source_root`` that an older grainline made relative to it (not a real
        path), sorted: one filtered scan of two columns (25 ms at 454k rows), where
        looking through every document's state in Python took ten times that."""
        if self._table is None:
            return []
        where = f"source_root = {quote(source_root)} AND NOT starts_with(doc_id, '/')"
        ids = {d for b in self.scan(["doc_id"], where) for d in b.column("doc_id").to_pylist()}
        return sorted(ids)

    @lance_errors()
    def vectors_by_hash(self, hashes: set[str]) -> dict[str, tuple[np.ndarray, int]]:
        """Stored vectors for these content hashes, so unchanged text is never re-embedded."""
        found: dict[str, tuple[np.ndarray, int]] = {}
        if self._table is None or not hashes:
            return found
        hashes_list = sorted(hashes)
        for i in range(0, len(hashes_list), 2000):
            where = in_list("content_hash", hashes_list[i : i + 2000])
            # A text stored many times (boilerplate, a paragraph many documents share)
            # has as many rows: the hashes are matched in their own small column, and
            # one row's vector is read per hash (reading every copy's vector made this
            # lookup grow with the table: 0.5 s for 300 hashes at 450k rows, now 0.07).
            first: dict[str, int] = {}
            q = self._table.search().select(["content_hash"]).where(where).with_row_id(True).limit(None)
            for batch in q.to_batches(8192):
                for h, rid in zip(batch.column("content_hash").to_pylist(), batch.column("_rowid").to_pylist()):
                    first.setdefault(h, rid)
            if not first:
                continue
            got = self._table.take_row_ids(list(first.values())).select(["content_hash", "vector", "n_windows"]).to_arrow()
            vecs = got.column("vector").combine_chunks().flatten().to_numpy(zero_copy_only=False).reshape(-1, self.dim)
            for h, v, nw in zip(got.column("content_hash").to_pylist(), vecs, got.column("n_windows").to_pylist()):
                found[h] = (v.copy(), nw)
        return found

    def write_documents(self, docs: list[tuple[Document, list[Chunk]]], vectors: Mapping[str, np.ndarray],
                        n_windows: Mapping[str, int], stamp: RowStamp, chunker_keys: list[str],
                        all_new: bool = False) -> dict[str, int]:
        """Store these documents' chunks with their vectors (both keyed by content hash)
        as rows of this table, replacing what the table held of them for these chunker
        keys, in one commit (:meth:`upsert_documents`). Returns row counts."""
        rows = chunk_rows(self.schema, self.dim, docs, vectors, n_windows, stamp)
        return self.upsert_documents(rows, [doc.doc_id for doc, _ in docs], chunker_keys, all_new=all_new)

    @lance_errors()
    def upsert_documents(self, rows: pa.Table, doc_ids: list[str], chunker_keys: list[str], all_new: bool = False) -> dict[str, int]:
        """Write the new chunks of these documents and delete their chunks (for these
        chunker keys) that no longer exist, in one commit. Returns row counts.

        ``all_new``: the caller knows the table holds no row of these documents (a
        first ingestion), so the rows are appended. Otherwise the documents' old rows
        are found through ``doc_id`` (a scalar index, or the fragments' statistics)
        and replaced (:meth:`_replace`): the cost follows the batch and the fragments
        that hold its documents, never the size of the table (a merge on ``chunk_id``
        that also deletes by source joins the whole table: 1.9 s a batch at 200k rows)."""
        if not doc_ids:
            return {"inserted": 0, "updated": 0, "deleted": 0}
        rows = rows.cast(self.schema) if rows.schema != self.schema else rows
        rows = _last_per_chunk(rows)
        if all_new:
            if rows.num_rows:
                self.table.add(rows)
            return {"inserted": rows.num_rows, "updated": 0, "deleted": 0}
        return self._replace(rows, f"{in_list('doc_id', doc_ids)} AND {in_list('chunker_key', chunker_keys)}")

    def _replace(self, rows: pa.Table, scope: str) -> dict[str, int]:
        """Delete the rows ``scope`` selects and add ``rows``, as one Lance commit (an
        ``Update``: deletion vectors on the fragments that held the old rows, new
        fragments for the new ones), so no reader and no crash ever sees a document half
        replaced. LanceDB's own API has no delete-and-insert in one commit except a
        merge that joins the whole table; pylance's transaction API (the lance version
        LanceDB bundles) does it, as LanceDB's merge does inside."""
        lance = import_lance()
        from lance.fragment import write_fragments

        ds = self.table.to_lance()
        old = ds.to_table(columns=["chunk_id"], filter=scope, with_row_address=True)
        if old.num_rows == 0 and rows.num_rows == 0:
            return {"inserted": 0, "updated": 0, "deleted": 0}
        updated, removed = [], []
        for frag_id in np.unique(np.asarray(old.column("_rowaddr")) >> 32).tolist():
            meta = ds.get_fragment(int(frag_id)).delete(scope)
            if meta is None:
                removed.append(int(frag_id))
            else:
                updated.append(meta)
        new = write_fragments(rows, ds, schema=self.schema, storage_options=_storage_options(ds)) if rows.num_rows else []
        lance.LanceDataset.commit(
            ds, lance.LanceOperation.Update(removed_fragment_ids=removed, updated_fragments=updated, new_fragments=new),
            read_version=ds.version, storage_options=_storage_options(ds),
        )
        self.table.checkout_latest()
        old_ids = set(old.column("chunk_id").to_pylist())
        kept = sum(1 for c in rows.column("chunk_id").to_pylist() if c in old_ids)
        return {"inserted": rows.num_rows - kept, "updated": kept, "deleted": len(old_ids) - kept}

    @lance_errors()
    def delete(self, where: str) -> int:
        if self._table is None:
            return 0
        before = self._table.count_rows()
        self._table.delete(where)
        return before - self._table.count_rows()

    def delete_documents(self, doc_ids: list[str], source_root: str | None = None) -> int:
        """Remove every chunk of these documents (all strategies)."""
        if not doc_ids:
            return 0
        where = in_list("doc_id", doc_ids)
        if source_root is not None:
            where += f" AND source_root = {quote(source_root)}"
        return self.delete(where)

    @lance_errors()
    def restore(self, version: int) -> int:
        """Make ``version`` the latest version again (a new commit; history is kept)."""
        versions = [v["version"] for v in self.table.list_versions()]
        if version not in versions:
            why = (" (older versions are pruned by maintenance: `grainline maintain --prune-days/--keep-versions`; "
                   "an undo command's version stays tagged until a later ingestion completes)") if version < versions[0] else ""
            from .index_check import version_ranges

            # Listed as runs: a repair may have set versions aside (see `grainline check --repair`).
            raise ValueError(f"table {self.table_name!r} has no version {version}{why}; versions: {version_ranges(versions)}")
        self.table.checkout(version)
        self.table.restore()
        return self.table.version


_STATE_COLUMNS = ["doc_id", "chunker_key", "doc_hash", "source_root"]


def _fold_states(batches: Iterator[pa.RecordBatch]) -> dict[str, DocState]:
    """doc_id -> DocState from batches of :data:`_STATE_COLUMNS`."""
    states: dict[str, DocState] = {}
    for batch in batches:
        # A document's chunks repeat its four values: Arrow keeps one row of each
        # (in the order first seen) before Python sees any (0.62 -> 0.39 s at 450k rows).
        cols = pa.Table.from_batches([batch]).group_by(_STATE_COLUMNS, use_threads=False).aggregate([]).to_pydict()
        for doc_id, key, h, root in zip(cols["doc_id"], cols["chunker_key"], cols["doc_hash"], cols["source_root"]):
            st = states.get(doc_id)
            if st is None:
                st = states[doc_id] = DocState(source_root=root)
            # A document half-written under an older hash shows several hashes for
            # one key; any mismatch must count as changed, so remember a marker.
            prev = st.hashes.get(key)
            st.hashes[key] = h if prev in (None, h) else "<mixed>"
    return states


def _last_per_chunk(rows: pa.Table) -> pa.Table:
    """One row per ``chunk_id``, the last given (a batch may name one chunk twice)."""
    ids = rows.column("chunk_id")
    if pc.count_distinct(ids).as_py() == rows.num_rows:
        return rows
    last = {c: i for i, c in enumerate(ids.to_pylist())}
    return rows.take(pa.array(sorted(last.values()), pa.int64()))


def _storage_options(ds: Any) -> dict[str, str] | None:
    """The storage options a pylance dataset was opened with (credentials for an
    object store come from the environment), for the writes made beside it."""
    return getattr(ds, "_storage_options", None) or None
