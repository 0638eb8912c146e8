"""Querying a chunks table: dense (cosine) search within one strategy."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from grainline.embedding import Embedder, EmbedderSettings
from grainline.ingest import get_embedder
from grainline.storage.chunks import connect, open_table_if_exists
from grainline.storage.sql import quote

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
) -> list[SearchHit]:
    """The ``k`` chunks of ``strategy`` closest to ``query`` by cosine similarity."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if not query.strip():
        raise ValueError("query is empty")
    embedder = get_embedder(embedder_settings or EmbedderSettings())
    table = open_chunks_table(db, embedder)
    vec = embedder.embed_queries([query])[0]
    filt = f"strategy = {quote(strategy)}" + (f" AND ({where})" if where else "")
    rows = (
        table.search(vec, vector_column_name="vector")
        .distance_type("cosine")
        .where(filt, prefilter=True)
        .select(RESULT_COLUMNS + ["_distance"])
        .limit(k)
        .to_list()
    )
    return [SearchHit(rank=i + 1, score=1.0 - float(r.pop("_distance")), row=r) for i, r in enumerate(rows)]
