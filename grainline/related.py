"""Related documents: the documents whose vectors are closest to a given document's.

How a document gets a vector
----------------------------
A document's vector is the mean of its chunk vectors for one strategy (``paragraph``
by default), weighted by each chunk's token count, then re-normalised to unit length.

Why this and not the ``article`` chunk: an article chunk exists only where the article
strategy was ingested, and an article longer than the model window is either truncated
(its tail is then invisible) or pooled over windows. The weighted mean of paragraph
chunks covers the whole text with every chunk embedded inside the model window, works
for whichever strategy a table holds, and on a document with a single chunk is exactly
that chunk's vector. Weighting by tokens keeps a one-line heading from counting as much
as a long paragraph, as pooling over windows would.

Similarity between documents is the cosine of these vectors. The ``related_docs``
table (:func:`precompute_related`) stores the top k for every document of a collection,
computed block by block so only ``block_size`` x n scores are held at once.

May import: defaults, embedding, storage.
"""

from __future__ import annotations

import difflib
import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from grainline.embedding import DEFAULT_MODEL
from grainline.storage.chunks import DEFAULT_DB, connect, open_table_if_exists
from grainline.storage.related_docs import RELATED_SCHEMA, related_writer
from grainline.storage.sql import quote

log = logging.getLogger("grainline.related")


class RelatedSettings(BaseModel):
    """Which collection and how many related documents per document."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    db: str = DEFAULT_DB
    table: str | None = None  # default: the chunks table of ``model``
    model: str = DEFAULT_MODEL
    strategy: str = "paragraph"
    k: int = Field(default=10, ge=1, le=1000)
    block_size: int = Field(default=1024, ge=1)  # documents scored per block


@dataclass
class DocVectors:
    """Unit document vectors, row ``i`` for ``doc_ids[i]`` (sorted), with titles."""

    doc_ids: list[str]
    titles: list[str]
    vectors: np.ndarray
    model_id: str
    table_name: str
    table_version: int

    def position(self, doc_id: str) -> int:
        """Row of ``doc_id``; an unknown id is an error naming it and the closest ids."""
        i = int(np.searchsorted(np.array(self.doc_ids, dtype=object), doc_id))
        if i < len(self.doc_ids) and self.doc_ids[i] == doc_id:
            return i
        close = difflib.get_close_matches(doc_id, self.doc_ids, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(f"unknown document id {doc_id!r} in table {self.table_name!r} "
                       f"({len(self.doc_ids)} documents){hint}")


def chunks_table_name(settings: RelatedSettings) -> str:
    """The chunks table ``settings`` name: ``table``, else the model's."""
    if settings.table is not None:
        return settings.table
    from grainline.embedding import EmbedderSettings, get_embedder

    return get_embedder(EmbedderSettings(model=settings.model, device="cpu")).identity.table_name


def resolve_table(settings: RelatedSettings) -> Any:
    """The chunks table named by ``settings``, or a clear error naming what is there."""
    conn = connect(settings.db)
    name = chunks_table_name(settings)
    table = open_table_if_exists(conn, name)
    if table is None:
        raise ValueError(f"no table {name!r} in {settings.db!r}; run `grainline ingest` first or pass --table")
    return table


def document_vectors(table: Any, strategy: str, batch_size: int = 8192) -> DocVectors:
    """Token-weighted, re-normalised mean of each document's ``strategy`` chunk vectors,
    accumulated batch by batch (the chunk vectors are never all in memory)."""
    dim = table.schema.field("vector").type.list_size
    where = f"strategy = {quote(strategy)}"
    sums: dict[str, np.ndarray] = {}
    titles: dict[str, str] = {}
    keys: set[str] = set()
    model_id = ""
    q = table.search().select(["doc_id", "chunker_key", "n_tokens", "title", "model_id", "vector"]).where(where).limit(None)
    for batch in q.to_batches(batch_size):
        ids = batch.column("doc_id").to_pylist()
        weights = np.maximum(np.asarray(batch.column("n_tokens").fill_null(1).to_numpy(zero_copy_only=False), dtype=np.float64), 1.0)
        vecs = batch.column("vector").flatten().to_numpy(zero_copy_only=False).reshape(-1, dim).astype(np.float64)
        keys.update(batch.column("chunker_key").unique().to_pylist())
        model_id = model_id or (batch.column("model_id")[0].as_py() or "")
        uniq, inverse = np.unique(np.array(ids, dtype=object), return_inverse=True)
        block = np.zeros((len(uniq), dim))
        np.add.at(block, inverse, vecs * weights[:, None])
        for j, d in enumerate(uniq):
            sums[d] = sums[d] + block[j] if d in sums else block[j]
        for d, t in zip(ids, batch.column("title").to_pylist()):
            titles.setdefault(d, t or "")
    if len(keys) > 1:
        # Two chunker settings of one strategy would blend two different cuttings.
        raise ValueError(f"table {table.name!r} holds {len(keys)} chunker settings for strategy {strategy!r} "
                         f"({', '.join(sorted(keys))}); re-ingest with one setting or use a table per setting")
    if not sums:
        strategies = sorted(set(table.search().select(["strategy"]).limit(None).to_arrow().column("strategy").to_pylist()))
        raise ValueError(f"table {table.name!r} has no {strategy!r} chunks (strategies there: {', '.join(strategies) or 'none'})")
    doc_ids = sorted(sums)
    mat = np.stack([sums[d] for d in doc_ids])
    mat /= np.maximum(np.linalg.norm(mat, axis=1, keepdims=True), 1e-12)
    return DocVectors(doc_ids, [titles[d] for d in doc_ids], mat.astype(np.float32), model_id, table.name, table.version)


def top_related(dv: DocVectors, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """For the documents at ``rows``: the positions and scores of their ``k`` most
    similar other documents, best first (a document is never related to itself)."""
    n = len(dv.doc_ids)
    k = min(k, n - 1)
    if k <= 0:
        return np.zeros((len(rows), 0), dtype=np.int64), np.zeros((len(rows), 0), dtype=np.float32)
    scores = dv.vectors[rows] @ dv.vectors.T
    scores[np.arange(len(rows)), rows] = -np.inf
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]  # k < n: the document itself is never picked
    top_scores = np.take_along_axis(scores, top, axis=1)
    order = np.argsort(-top_scores, axis=1, kind="stable")
    return np.take_along_axis(top, order, axis=1), np.take_along_axis(top_scores, order, axis=1)


@dataclass
class Related:
    rank: int
    doc_id: str
    title: str
    score: float


def related(doc_id: str, settings: RelatedSettings) -> list[Related]:
    """The ``settings.k`` documents most similar to ``doc_id``."""
    from grainline.storage.damage import reading

    with reading(chunks_table_name(settings), settings.db):
        table = resolve_table(settings)
        dv = document_vectors(table, settings.strategy)
    i = dv.position(doc_id)
    idx, sc = top_related(dv, np.array([i]), settings.k)
    return [Related(r + 1, dv.doc_ids[j], dv.titles[j], float(s)) for r, (j, s) in enumerate(zip(idx[0], sc[0]))]


def _blocks(n: int, size: int) -> Iterator[np.ndarray]:
    for start in range(0, n, size):
        yield np.arange(start, min(start + size, n))


def precompute_related(settings: RelatedSettings) -> dict[str, Any]:
    """Fill ``related_docs`` with the top k of every document of the collection.

    Each block of documents is one upsert keyed by (source table, strategy, doc id,
    rank), which also drops ranks beyond k for those documents; rows of documents no
    longer in the collection are deleted at the end. A re-run over an unchanged
    collection therefore leaves the same rows. Returns counts and timings."""
    import time

    t0 = time.perf_counter()
    from grainline.storage.damage import reading

    with reading(chunks_table_name(settings), settings.db):
        table = resolve_table(settings)
        dv = document_vectors(table, settings.strategy)
    t_vectors = time.perf_counter() - t0
    now = datetime.now(timezone.utc)
    with related_writer(settings.db, dv.table_name, settings.strategy, dv.model_id,
                        {"k": settings.k, "table_version": dv.table_version}) as (out, record):
        for rows in _blocks(len(dv.doc_ids), settings.block_size):
            idx, sc = top_related(dv, rows, settings.k)
            kk = idx.shape[1]
            doc_ids = [dv.doc_ids[i] for i in rows]
            n = len(rows) * kk
            out.upsert(pa.table({
                "doc_id": np.repeat(np.array(doc_ids, dtype=object), kk).tolist(),
                "rank": np.tile(np.arange(1, kk + 1, dtype=np.int32), len(rows)),
                "related_doc_id": [dv.doc_ids[j] for j in idx.ravel()],
                "score": sc.ravel().astype(np.float32),
                "source_table": [dv.table_name] * n,
                "strategy": [settings.strategy] * n,
                "model_id": [dv.model_id] * n,
                "table_version": [dv.table_version] * n,
                "computed_at": pa.array([now] * n, pa.timestamp("us", tz="UTC")),
            }, schema=RELATED_SCHEMA), doc_ids)
        out.keep_only(set(dv.doc_ids))
        stored = out.rows()
    return {
        "table": dv.table_name, "table_version": dv.table_version, "strategy": settings.strategy,
        "documents": len(dv.doc_ids), "k": settings.k, "rows": stored, "run_id": record.run_id,
        "inserted": out.inserted, "updated": out.updated, "deleted": out.deleted,
        "seconds_vectors": round(t_vectors, 3), "seconds_total": round(time.perf_counter() - t0, 3),
    }
