"""What a database holds: its tables (rows, models, strategies, versions) and the
sources of a chunks table; and deleting one whole source from a chunks table."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .chunks import ChunkStore, connect, open_table_if_exists
from .ledger import Ledger, RunRecord, utcnow
from .locks import TableLock
from .parquet import default_export_dir, export_table, exported_version
from .tables import table_names


def _names(conn: Any) -> list[str]:
    return sorted(table_names(conn))


def table_summaries(db: str) -> list[dict[str, Any]]:
    """One entry per table: name, rows, version, versions kept, and for chunks tables
    the models and strategies it holds (from a scan of those two columns)."""
    conn = connect(db)
    out = []
    for name in _names(conn):
        t = open_table_if_exists(conn, name)
        if t is None:
            continue
        entry: dict[str, Any] = {"table": name, "rows": t.count_rows(), "version": t.version,
                                 "versions": len(t.list_versions()), "models": [], "strategies": []}
        cols = set(t.schema.names)
        if {"model_id", "strategy"} <= cols:
            models: dict[str, int] = {}
            strategies: dict[str, int] = {}
            for b in t.search().select(["model_id", "strategy"]).limit(None).to_batches(8192):
                for m, s in zip(b.column("model_id").to_pylist(), b.column("strategy").to_pylist()):
                    models[m] = models.get(m, 0) + 1
                    strategies[s] = strategies.get(s, 0) + 1
            entry["models"] = sorted(models)
            entry["strategies"] = {s: strategies[s] for s in sorted(strategies)}
        out.append(entry)
    return out


@dataclass
class SourceSummary:
    source_root: str
    documents: int = 0
    chunks: int = 0
    last_ingested: datetime | None = None
    doc_ids: list[str] = field(default_factory=list, repr=False)


def source_summaries(db: str, table: str) -> list[SourceSummary]:
    """The roots a chunks table's rows were ingested from, with their documents,
    chunks and latest ingestion time."""
    t = open_table_if_exists(connect(db), table)
    if t is None:
        raise ValueError(f"no table {table!r} in {db!r}")
    by_root: dict[str, SourceSummary] = {}
    docs: dict[str, set[str]] = {}
    for b in t.search().select(["doc_id", "source_root", "ingested_at"]).limit(None).to_batches(8192):
        for d, r, at in zip(b.column("doc_id").to_pylist(), b.column("source_root").to_pylist(), b.column("ingested_at").to_pylist()):
            s = by_root.setdefault(r, SourceSummary(r))
            s.chunks += 1
            docs.setdefault(r, set()).add(d)
            if at is not None and (s.last_ingested is None or at > s.last_ingested):
                s.last_ingested = at
    for r, s in by_root.items():
        s.doc_ids = sorted(docs[r])
        s.documents = len(s.doc_ids)
    return [by_root[r] for r in sorted(by_root)]


def delete_source(db: str, table: str, root: str, lock_timeout_s: float = 600) -> RunRecord:
    """Delete every document of a source from a chunks table: the rows ingested from
    ``root``, and the files under it whichever run wrote them (ids are real paths).
    Runs under the table's write lock and is recorded in the ledger (flow
    ``delete-source``), with the version before and after for ``grainline restore``."""
    t = open_table_if_exists(connect(db), table)
    if t is None:
        raise ValueError(f"no table {table!r} in {db!r}")
    dim = t.schema.field("vector").type.list_size
    store = ChunkStore(db, table, dim)
    prefix = root.rstrip("/") + "/"
    with TableLock(db, table, timeout_s=lock_timeout_s):
        states = store.doc_states()
        ids = sorted(d for d, st in states.items() if st.source_root == root or d.startswith(prefix))
        if not ids:
            known = sorted({st.source_root for st in states.values()})
            raise ValueError(f"table {table!r} holds no documents of source {root!r}; sources: {', '.join(known) or 'none'}")
        rec = RunRecord(run_id=f"delete-source-{utcnow():%Y%m%dT%H%M%S}-{store.version()}", flow="delete-source",
                        source=root, table_name=table, model_id="", parameters={"root": root},
                        version_before=store.version())
        rec.counts.chunks_deleted = store.delete_documents(ids)
        rec.counts.docs_deleted = len(ids)
        out = default_export_dir(db, table)
        if exported_version(out) is not None:  # an export exists: it follows the table
            export_table(store.table, out)
        rec.status, rec.finished, rec.version_after = "completed", utcnow(), store.version()
        Ledger(db).write(rec)
    return rec
