"""Querying a chunks table: dense (cosine) search within one strategy.

With a vector index (built by maintenance once a table has enough rows) the search is
approximate: IVF_PQ candidates from at least ``NPROBES`` partitions, re-ranked by their
exact cosine (``REFINE_FACTOR`` times ``k`` of them). Without one it is exact."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from grainline.embedding import Embedder, EmbedderSettings
from grainline.ingest import get_embedder
from grainline.storage.chunks import connect, open_table_if_exists
from grainline.storage.maintenance import vector_index
from grainline.storage.sql import quote

# Partitions probed at least (more when a filter leaves fewer than k rows in them), and
# how many candidates per hit are re-ranked with the stored full vectors.
NPROBES = 32
REFINE_FACTOR = 10

RESULT_COLUMNS = ["chunk_id", "doc_id", "strategy", "chunker_key", "ordinal", "start", "end", "text", "title", "source", "handling"]


@dataclass
class SearchHit:
    rank: int
    score: float
    row: dict[str, Any]


def open_chunks_table(db: str, embedder: Embedder) -> Any:
    """The chunks table of this model, or a clear error naming what is there instead."""
    conn = connect(db)
    name = embedder.identity.table_name
    table = open_table_if_exists(conn, name)
    if table is None:
        tables = [t for t in _table_names(conn) if t.startswith("chunks_")]
        raise ValueError(
            f"no chunks table for model {embedder.identity.model_id!r} in {db!r} (expected {name!r}); "
            f"tables there: {', '.join(tables) or 'none'}. Run `grainline ingest` first."
        )
    return table


def _table_names(conn: Any) -> list[str]:
    if hasattr(conn, "list_tables"):
        res = conn.list_tables()
        return list(getattr(res, "tables", res))
    return list(conn.table_names())


def search(
    query: str,
    db: str,
    strategy: str = "paragraph",
    k: int = 5,
    embedder_settings: EmbedderSettings | None = None,
    where: str | None = None,
    method: str = "dense",
) -> list[SearchHit]:
    """The ``k`` best chunks of ``strategy`` for ``query``: by cosine similarity
    (``dense``), or by any method of the evaluation's retrieval registry (``bm25``,
    ``hybrid``, ``svm``), so what an evaluation recommends can be searched with."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if not query.strip():
        raise ValueError("query is empty")
    if method != "dense":
        from grainline.evaluation.retrieval import RETRIEVERS

        RETRIEVERS.get(method)  # an unknown name fails before the model loads, listing the known ones
        if where:
            raise ValueError(f"a filter (where) works with --method dense only, not {method!r}")
    embedder = get_embedder(embedder_settings or EmbedderSettings())
    table = open_chunks_table(db, embedder)
    vec = embedder.embed_queries([query])[0]
    if method != "dense":
        return registry_search(table, query, vec, strategy, k, method, embedder.identity.dim)
    return dense_search(table, vec, strategy, k, where)


def registry_search(table: Any, query: str, vector: Any, strategy: str, k: int, method: str, dim: int) -> list[SearchHit]:
    """One query through a method of the retrieval registry, over the strategy's chunks
    held in memory exactly as an evaluation holds them (same ranking, same ties)."""
    from collections import Counter

    from grainline.evaluation.datasets import Query
    from grainline.evaluation.retrieval import RETRIEVERS, ChunkIndex, RetrievalContext

    keys = table.search().select(["chunker_key"]).where(f"strategy = {quote(strategy)}").limit(None).to_arrow()
    if not keys.num_rows:
        return []
    # Several keys only after the strategy's settings changed: search the current one (most chunks).
    key = Counter(keys.column("chunker_key").to_pylist()).most_common(1)[0][0]
    index = ChunkIndex.load(table, key, dim)
    ctx = RetrievalContext(table=table, chunker_key=key, index=index, query_vectors={"q": vector})
    hits = RETRIEVERS.get(method)(ctx, [Query("q", query, {})], k)["q"]
    at = {(index.doc_ids[i], int(index.starts[i]), int(index.ends[i])): index.chunk_ids[i] for i in range(len(index.chunk_ids))}
    ids = [at[(h.doc_id, h.start, h.end)] for h in hits]
    if not ids:
        return []
    rows = table.search().select(RESULT_COLUMNS).where("chunk_id IN (" + ", ".join(quote(c) for c in ids) + ")").limit(None).to_list()
    by_id = {r["chunk_id"]: r for r in rows}
    return [SearchHit(rank=i + 1, score=float(h.score), row=by_id[c]) for i, (h, c) in enumerate(zip(hits, ids))]


def dense_query(table: Any, vector: Any, strategy: str, k: int, where: str | None = None) -> Any:
    """The LanceDB query for the ``k`` rows of ``strategy`` nearest to ``vector``
    (cosine): through the vector index when the table has one, exact otherwise."""
    filt = f"strategy = {quote(strategy)}" + (f" AND ({where})" if where else "")
    q = table.search(vector, vector_column_name="vector").distance_type("cosine")
    if vector_index(table) is not None:
        # 0: no upper limit, so a narrow filter can still fill k from further partitions.
        q = q.minimum_nprobes(NPROBES).maximum_nprobes(0).refine_factor(REFINE_FACTOR)
    else:
        q = q.bypass_vector_index()
    return q.where(filt, prefilter=True).select(RESULT_COLUMNS + ["_distance"]).limit(k)


def dense_search(table: Any, vector: Any, strategy: str, k: int, where: str | None = None) -> list[SearchHit]:
    """Run :func:`dense_query`; scores are cosine similarities."""
    rows = dense_query(table, vector, strategy, k, where).to_list()
    return [SearchHit(rank=i + 1, score=1.0 - float(r.pop("_distance")), row=r) for i, r in enumerate(rows)]
