"""Querying a chunks table within one strategy: ``dense`` (cosine), ``bm25`` (the
native full-text index) or ``hybrid`` (reciprocal-rank fusion of the two), from the
``SEARCH_METHODS`` registry.

With a vector index (built by maintenance once a table has enough rows) dense search
is approximate: IVF_PQ candidates from at least ``NPROBES`` partitions, re-ranked by
their exact cosine (``REFINE_FACTOR`` times ``k`` of them). Without one it is exact.

Imports are lazy: the CLI checks a ``--method`` against the registry before loading
LanceDB or a model.

May import: chunkers, documents, embedding, evaluation, registry, storage.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from grainline.registry import Registry

if TYPE_CHECKING:
    from grainline.embedding import Embedder, EmbedderSettings

# Partitions probed at least (more when a filter leaves fewer than k rows in them), and
# how many candidates per hit are re-ranked with the stored full vectors. PQ codes rank
# the candidates; on 2M vectors 10 per hit kept recall@10 at 0.76 and 50 at 0.98, in the
# same 80 ms per query (probing 64 or 128 partitions changed nothing): docs/benchmark.md.
NPROBES = 32
REFINE_FACTOR = 50
# Reciprocal-rank fusion constant (the RRF paper's value, as in evaluation), and how
# deep each list is read for hybrid: fusion needs more than the k it returns.
RRF_K = 60
HYBRID_DEPTH = 50

RESULT_COLUMNS = ["chunk_id", "doc_id", "strategy", "chunker_key", "ordinal", "start", "end", "text", "title", "source",
                  "handling", "metadata", "model_id"]


@dataclass
class SearchHit:
    rank: int
    score: float
    row: dict[str, Any]


@dataclass
class SearchRequest:
    """What a search method gets: the table, the query, its filter, and the query
    vector on demand (bm25 never loads the model)."""

    table: Any
    query: str
    strategy: str
    k: int
    where: str | None
    vector_fn: Callable[[], Any]
    options: dict[str, Any] = field(default_factory=dict)
    _vector: Any = None

    @property
    def vector(self) -> Any:
        if self._vector is None:
            self._vector = self.vector_fn()
        return self._vector


SearchFn = Callable[[SearchRequest], list[SearchHit]]
SEARCH_METHODS: Registry[SearchFn] = Registry("search method")


def open_chunks_table(db: str, embedder: "Embedder", name: str | None = None) -> Any:
    """The chunks table of this model (or ``name``, the alias's target), or a clear
    error naming what is there instead."""
    from grainline.storage.chunks import connect, open_table_if_exists
    from grainline.storage.tables import chunk_table_names

    conn = connect(db)
    table = open_table_if_exists(conn, name or embedder.identity.table_name)
    if table is None:
        tables = chunk_table_names(conn)
        what = (f"no chunks table {name!r} (the alias's target)" if name else
                f"no chunks table for model {embedder.identity.model_id!r} (expected {embedder.identity.table_name!r})")
        raise ValueError(f"{what} in {db!r}; tables there: {', '.join(tables) or 'none'}. Run `grainline ingest` first.")
    return table


def alias_reader(db: str, device: str = "auto", backend: str = "auto") -> tuple[str | None, "EmbedderSettings"]:
    """What a reader that names no model reads: the alias's target table and the
    settings of the model that made its vectors (queries must be embedded with it),
    from one small file read; without an alias, (None, the default model's settings),
    which read the default model's own table as before."""
    from grainline.embedding import EmbedderSettings
    from grainline.storage.alias import read_alias

    alias = read_alias(db)
    if alias is None:
        return None, EmbedderSettings(device=device, backend=backend)
    t = alias.target
    return t.table, EmbedderSettings(model=t.model, precision=t.precision, head=t.head, device=device, backend=backend)


def metadata_filter(pairs: list[str]) -> tuple[str | None, Callable[[dict[str, Any]], bool]]:
    """``['topic=bees', 'year=2024']`` -> a SQL prefilter on the stored metadata JSON
    (a LIKE that every match passes) and an exact check of the decoded metadata.
    A value that reads as JSON (``2024``, ``true``) is compared as that value, else as
    a string."""
    wanted: dict[str, Any] = {}
    for pair in pairs:
        key, eq, raw = pair.partition("=")
        if not eq or not key:
            raise ValueError(f"--where expects KEY=VALUE on document metadata, got {pair!r}")
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        wanted[key] = value
    if not wanted:
        return None, lambda row: True
    from grainline.documents import canonical_json
    from grainline.storage.sql import quote

    # Metadata is stored as canonical JSON (sorted keys, no spaces), so each top-level
    # pair appears as '"key":value' verbatim; the exact check drops nested look-alikes.
    likes = [f"metadata LIKE {quote('%' + canonical_json({k: v})[1:-1] + '%')}" for k, v in wanted.items()]

    def exact(row: dict[str, Any]) -> bool:
        meta = json.loads(row.get("metadata") or "{}")
        return all(k in meta and meta[k] == v for k, v in wanted.items())

    return " AND ".join(likes), exact


def search(
    query: str,
    db: str,
    strategy: str = "paragraph",
    k: int = 5,
    embedder_settings: "EmbedderSettings | None" = None,
    where: str | None = None,
    method: str = "dense",
    metadata: list[str] | None = None,
    returns: str | None = None,
    table: str | None = None,
) -> list[SearchHit]:
    """The ``k`` chunks of ``strategy`` that best match ``query`` by ``method``
    (``dense``, ``bm25``, ``hybrid``, or ``svm`` from the evaluation's retrieval
    registry, so what an evaluation recommends can be searched with); ``where`` is a
    SQL filter on the table's columns, ``metadata`` ``KEY=VALUE`` pairs every hit's
    document metadata must hold. ``returns`` (small-to-big): a coarser strategy whose
    chunks are returned instead, the ``k`` that hold the best ``strategy`` hits, each
    once, with the score of its best child and that child under ``row["matched"]``.
    ``table``: read this chunks table (the alias's target, :func:`alias_reader`)
    instead of the model's own; ``embedder_settings`` must be its model's."""
    fn = SEARCH_METHODS.get(method)
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if not query.strip():
        raise ValueError("query is empty")
    if returns is not None:
        from grainline.chunkers.nesting import check_coarser

        check_coarser(strategy, returns)
    from grainline.embedding import EmbedderSettings, get_embedder

    from grainline.storage.damage import reading

    embedder = get_embedder(embedder_settings or EmbedderSettings())
    with reading(table or embedder.identity.table_name, db):
        opened = open_chunks_table(db, embedder, table)
        return _search(opened, fn, query, strategy, k, embedder, where, metadata, returns, db)


def _search(table: Any, fn: SearchFn, query: str, strategy: str, k: int, embedder: "Embedder", where: str | None,
            metadata: list[str] | None, returns: str | None, db: str) -> list[SearchHit]:
    meta_sql, exact = metadata_filter(metadata or [])
    filt = " AND ".join(f"({w})" for w in (where, meta_sql) if w) or None
    vector_fn = _once(lambda: embedder.embed_queries([query])[0])
    # The exact metadata check can drop a LIKE match: ask for more, keep k. Small-to-big
    # asks for more children until k parents are found or the children run out.
    want = k * 4 if meta_sql else k
    if returns is not None:
        want *= 8
    while True:
        children = fn(SearchRequest(table, query, strategy, want, filt, vector_fn, options={"db": db}))
        hits = [h for h in children if exact(h.row)]
        if returns is not None:
            hits = parent_hits(table, hits, strategy, returns)
        if len(hits) >= k or len(children) < want or returns is None or want >= MAX_CHILDREN:
            break
        want = min(want * 4, MAX_CHILDREN)
    return [SearchHit(i + 1, h.score, h.row) for i, h in enumerate(hits[:k])]


# Small-to-big reads at most this many child hits to fill k parents.
MAX_CHILDREN = 4096


def _once(fn: Callable[[], Any]) -> Callable[[], Any]:
    """``fn`` called on first use only (the query is embedded once however many times
    small-to-big asks for more children)."""
    box: list[Any] = []

    def call() -> Any:
        if not box:
            box.append(fn())
        return box[0]

    return call


def stored_strategies(table: Any) -> list[str]:
    """The strategies a chunks table holds rows of."""
    col = table.search().select(["strategy"]).limit(None).to_arrow().column("strategy")
    return sorted(set(col.unique().to_pylist()))


def parent_hits(table: Any, hits: list[SearchHit], strategy: str, parent: str) -> list[SearchHit]:
    """Each hit's enclosing ``parent`` chunk from the same table (its document's chunk of
    that strategy overlapping it most), first occurrence only, in the hits' order."""
    from grainline.chunkers.nesting import Parents, expand
    from grainline.storage.damage import without_scalar_index
    from grainline.storage.sql import quote

    if not hits:
        return []
    docs = list(dict.fromkeys(h.row["doc_id"] for h in hits))
    rows: list[dict[str, Any]] = []
    for i in range(0, len(docs), 500):  # a bounded IN list per query
        ids = ", ".join(quote(d) for d in docs[i:i + 500])
        where = f"strategy = {quote(parent)} AND doc_id IN ({ids})"
        rows += without_scalar_index(table, lambda: table.search().where(where).select(RESULT_COLUMNS).limit(None).to_list(),
                                     where, RESULT_COLUMNS)
    if not rows:
        stored = stored_strategies(table)
        if parent not in stored:
            raise ValueError(f"--return {parent}: table {table.name} holds no {parent} chunks "
                             f"(strategies stored: {', '.join(stored) or 'none'})")
        return []
    by_id = {r["chunk_id"]: r for r in rows}
    parents = Parents((r["doc_id"], r["start"], r["end"], r["chunk_id"]) for r in rows)
    out = []
    for h, cid in expand(hits, lambda h: (h.row["doc_id"], h.row["start"], h.row["end"]), parents):
        matched = {"strategy": strategy, "chunk_id": h.row["chunk_id"], "start": h.row["start"], "end": h.row["end"],
                   "text": h.row["text"]}
        out.append(SearchHit(len(out) + 1, h.score, {**by_id[cid], "matched": matched}))
    return out


def registry_search(table: Any, query: str, vector: Any, strategy: str, k: int, method: str, dim: int) -> list[SearchHit]:
    """One query through a method of the retrieval registry, over the strategy's chunks
    held in memory exactly as an evaluation holds them (same ranking, same ties)."""
    from collections import Counter

    from grainline.evaluation.datasets import Query
    from grainline.evaluation.retrieval import RETRIEVERS, ChunkIndex, RetrievalContext
    from grainline.storage.sql import quote

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


def dense_query(table: Any, vector: Any, strategy: str, k: int, where: str | None = None, exact: bool = False) -> Any:
    """The LanceDB query for the ``k`` rows of ``strategy`` nearest to ``vector``
    (cosine): through the vector index when the table has one (and not ``exact``),
    exact otherwise."""
    from grainline.storage.maintenance import vector_index
    from grainline.storage.sql import quote

    filt = f"strategy = {quote(strategy)}" + (f" AND ({where})" if where else "")
    q = table.search(vector, vector_column_name="vector").distance_type("cosine")
    if not exact and vector_index(table) is not None:
        # 0: no upper limit, so a narrow filter can still fill k from further partitions.
        q = q.minimum_nprobes(NPROBES).maximum_nprobes(0).refine_factor(REFINE_FACTOR)
    else:
        q = q.bypass_vector_index()
    return q.where(filt, prefilter=True).select(RESULT_COLUMNS + ["_distance"]).limit(k)


def dense_search(table: Any, vector: Any, strategy: str, k: int, where: str | None = None,
                 db: str | None = None) -> list[SearchHit]:
    """Run :func:`dense_query`; scores are cosine similarities. A damaged vector index
    is said once and the search done exactly instead."""
    from grainline.storage.damage import is_damage, warn_index
    from grainline.storage.maintenance import vector_index

    try:
        rows = dense_query(table, vector, strategy, k, where).to_list()
    except Exception as exc:
        ix = vector_index(table)
        if ix is None or not is_damage(exc):
            raise
        rows = dense_query(table, vector, strategy, k, where, exact=True).to_list()
        warn_index(table.name, ix.name, exc, "searched exactly instead", db)
    return [SearchHit(rank=i + 1, score=1.0 - float(r.pop("_distance")), row=r) for i, r in enumerate(rows)]


@SEARCH_METHODS.register("dense")
def _dense(req: SearchRequest) -> list[SearchHit]:
    """Cosine similarity of the query vector."""
    return dense_search(req.table, req.vector, req.strategy, req.k, req.where, req.options.get("db"))


@SEARCH_METHODS.register("bm25")
def _bm25(req: SearchRequest) -> list[SearchHit]:
    """BM25 over the chunk texts (the full-text index maintenance builds); scores are
    BM25 scores. No model is loaded."""
    from grainline.storage.maintenance import FTS_INDEX
    from grainline.storage.sql import quote

    if FTS_INDEX not in {getattr(ix, "name", None) for ix in req.table.list_indices()}:
        raise ValueError(f"table {req.table.name} has no full-text index; build it with `grainline maintain` "
                         f"(ingestion builds it unless --no-maintain)")
    filt = f"strategy = {quote(req.strategy)}" + (f" AND ({req.where})" if req.where else "")
    try:
        rows = (req.table.search(req.query, query_type="fts", fts_columns="text").where(filt, prefilter=True)
                .select(RESULT_COLUMNS + ["_score"]).limit(req.k).to_list())
    except Exception as exc:
        from grainline.storage.damage import is_damage, warn_index

        if not is_damage(exc):
            raise
        # The full-text index is damaged: the query's meaning, densely (scores are cosines).
        hits = _dense(req)
        warn_index(req.table.name, FTS_INDEX, exc, "answered with dense search instead", req.options.get("db"))
        return hits
    return [SearchHit(rank=i + 1, score=float(r.pop("_score")), row=r) for i, r in enumerate(rows)]


@SEARCH_METHODS.register("hybrid")
def _hybrid(req: SearchRequest) -> list[SearchHit]:
    """Reciprocal-rank fusion of dense and bm25, each read to ``HYBRID_DEPTH`` (or
    ``k``, when larger); scores are the fused RRF scores."""
    depth = max(req.k, HYBRID_DEPTH)
    deep = SearchRequest(req.table, req.query, req.strategy, depth, req.where, req.vector_fn, options=req.options)
    fused: dict[str, float] = {}
    rows: dict[str, dict[str, Any]] = {}
    for hits in (_dense(deep), _bm25(deep)):
        for h in hits:
            cid = h.row["chunk_id"]
            fused[cid] = fused.get(cid, 0.0) + 1.0 / (RRF_K + h.rank)
            rows.setdefault(cid, h.row)
    best = sorted(fused, key=lambda c: (-fused[c], c))[: req.k]
    return [SearchHit(rank=i + 1, score=fused[c], row=rows[c]) for i, c in enumerate(best)]


@SEARCH_METHODS.register("svm")
def _svm(req: SearchRequest) -> list[SearchHit]:
    """The evaluation's SVM ranker (a linear SVM per query: the query vector against
    the strategy's chunks), through the retrieval registry exactly as an evaluation
    runs it. Filters are not supported."""
    if req.where:
        raise ValueError("a filter (--where/--filter) works with --method dense, bm25 or hybrid, not svm")
    return registry_search(req.table, req.query, req.vector, req.strategy, req.k, "svm", len(req.vector))
