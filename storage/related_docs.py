"""The ``related_docs`` table: its schema and key, and every write to it, made under
the table's write lock and recorded in the ledger like any other run."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa

from .chunks import connect
from .commits import retry_commit
from .ledger import Ledger, RunRecord, utcnow
from .locks import TableLock
from .sql import in_list, quote
from .tables import open_or_create

RELATED_TABLE = "related_docs"
RELATED_SCHEMA = pa.schema([
    pa.field("doc_id", pa.string(), nullable=False),
    pa.field("rank", pa.int32(), nullable=False),
    pa.field("related_doc_id", pa.string(), nullable=False),
    pa.field("score", pa.float32()),
    pa.field("source_table", pa.string(), nullable=False),
    pa.field("strategy", pa.string(), nullable=False),
    pa.field("model_id", pa.string()),
    pa.field("table_version", pa.int64()),
    pa.field("computed_at", pa.timestamp("us", tz="UTC")),
])
# One row per (collection, strategy, document, rank): what a re-run overwrites.
RELATED_KEY = ["source_table", "strategy", "doc_id", "rank"]
LOCK_TIMEOUT_S = 600.0


class RelatedWriter:
    """One precomputation of a collection's related documents, as a context manager:
    entering takes the table's lock and records a 'running' run in the ledger; leaving
    records 'completed', or 'failed' with the error, and the versions before and after.

    Blocks are upserts on :data:`RELATED_KEY` scoped to their documents (a document's
    ranks beyond the new k go too), so re-running a block, or the whole run, is safe."""

    def __init__(self, db_uri: str, source_table: str, strategy: str, model_id: str,
                 parameters: dict[str, Any], lock_timeout_s: float = LOCK_TIMEOUT_S) -> None:
        self.db_uri, self.source_table, self.strategy = db_uri, source_table, strategy
        self.scope = f"source_table = {quote(source_table)} AND strategy = {quote(strategy)}"
        self.inserted = self.updated = self.deleted = 0
        self.record = RunRecord(
            run_id=f"related-{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}",
            flow="related", source=source_table, table_name=RELATED_TABLE, model_id=model_id,
            parameters={"strategy": strategy, **parameters},
        )
        self._lock = TableLock(db_uri, RELATED_TABLE, lock_timeout_s, run_id=self.record.run_id)
        self._table: Any = None
        self._ledger: Ledger | None = None

    def __enter__(self) -> "RelatedWriter":
        self._lock.acquire()
        try:
            self._table = open_or_create(connect(self.db_uri), self.db_uri, RELATED_TABLE, RELATED_SCHEMA)
            self.record.version_before = self._table.version
            self._ledger = Ledger(self.db_uri)
            self._ledger.write(self.record)
        except BaseException:
            self._lock.release()
            raise
        return self

    def upsert(self, data: pa.Table, doc_ids: list[str]) -> None:
        """The top-k rows of ``doc_ids`` (this collection and strategy): they replace
        whatever those documents had."""
        scope = f"{self.scope} AND {in_list('doc_id', doc_ids)}"
        res = retry_commit(
            lambda: self._table.merge_insert(RELATED_KEY).when_matched_update_all().when_not_matched_insert_all()
            .when_not_matched_by_source_delete(scope).execute(data),
            f"related_docs rows of {len(doc_ids)} documents",
        )
        self.inserted += res.num_inserted_rows
        self.updated += res.num_updated_rows
        self.deleted += res.num_deleted_rows

    def keep_only(self, doc_ids: set[str]) -> None:
        """Delete the rows of documents of this collection and strategy not in ``doc_ids``
        (documents gone from the collection since the last run)."""
        t = self._table
        stored = set(t.search().where(self.scope).select(["doc_id"]).limit(None).to_arrow().column("doc_id").to_pylist())
        gone = sorted(stored - doc_ids)
        for i in range(0, len(gone), 1000):
            before = t.count_rows()
            retry_commit(lambda: t.delete(f"{self.scope} AND {in_list('doc_id', gone[i:i + 1000])}"),
                         "deleting related_docs rows of documents gone")
            self.deleted += before - t.count_rows()

    def rows(self) -> int:
        """How many rows this collection and strategy have now."""
        return self._table.count_rows(self.scope)

    def __exit__(self, exc_type, exc, tb) -> None:
        rec, ledger = self.record, self._ledger
        try:
            rec.counts.chunks_written = self.inserted + self.updated
            rec.counts.chunks_deleted = self.deleted
            rec.status = "completed" if exc is None else "failed"
            rec.error = None if exc is None else f"{type(exc).__name__}: {exc}"
            rec.finished, rec.version_after = utcnow(), self._table.version
            if ledger is not None:
                ledger.write(rec)
        finally:
            self._lock.release()
