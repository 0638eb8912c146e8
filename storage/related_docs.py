"""The ``related_docs`` table: its schema and key, and every write to it, made under
the table's write lock and recorded in the ledger like any other run."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import pyarrow as pa

from .chunks import connect
from .commits import retry_commit
from .ledger import RunRecord, new_run_id, recorded_run
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
    """The writes of one precomputation of a collection's related documents, to the
    table :func:`related_writer` opened. Blocks are upserts on :data:`RELATED_KEY`
    scoped to their documents (a document's ranks beyond the new k go too), so
    re-running a block, or the whole run, is safe."""

    def __init__(self, table: Any, source_table: str, strategy: str) -> None:
        self._table = table
        self.scope = f"source_table = {quote(source_table)} AND strategy = {quote(strategy)}"
        self.inserted = self.updated = self.deleted = 0

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


@contextmanager
def related_writer(db_uri: str, source_table: str, strategy: str, model_id: str, parameters: dict[str, Any],
                   lock_timeout_s: float = LOCK_TIMEOUT_S) -> Iterator[tuple[RelatedWriter, RunRecord]]:
    """A precomputation as a run on ``related_docs``: its write lock held and the run in
    the ledger (:func:`grainline.storage.ledger.recorded_run`), with the rows written
    and deleted as the run's counts. Yields the writer and the run's record."""
    record = RunRecord(run_id=new_run_id("related"), flow="related", source=source_table, table_name=RELATED_TABLE,
                       model_id=model_id, parameters={"strategy": strategy, **parameters})
    with recorded_run(db_uri, record, lambda: open_or_create(connect(db_uri), db_uri, RELATED_TABLE, RELATED_SCHEMA),
                      lambda t: t.version, lock_timeout_s) as table:
        writer = RelatedWriter(table, source_table, strategy)
        try:
            yield writer, record
        finally:  # the counts go into the record whichever way the run ends
            record.counts.chunks_written = writer.inserted + writer.updated
            record.counts.chunks_deleted = writer.deleted
