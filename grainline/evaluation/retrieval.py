"""Retrieval methods for evaluation, in a registry: ``dense`` (exact cosine kNN),
``bm25`` (LanceDB's native full-text index), ``hybrid`` (reciprocal-rank fusion) and
``svm`` (a linear SVM per query, re-ranking the top dense candidates).

A method takes a :class:`RetrievalContext` (one strategy's chunks in one table) and
the queries, and returns ranked :class:`Hit` lists per query id."""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, field_validator

from grainline.registry import Registry
from grainline.storage.maintenance import ensure_fts_index
from grainline.storage.sql import quote

from .datasets import Query
from .metrics import Hit

log = logging.getLogger("grainline.evaluation")

RetrieverFn = Callable[["RetrievalContext", Sequence[Query], int], dict[str, list[Hit]]]
RETRIEVERS: Registry[RetrieverFn] = Registry("retrieval method")

# Reciprocal-rank fusion constant: the value from the original RRF paper, the usual default.
RRF_K = 60
# Decimals at which dense scores count as equal (float32 noise is ~1e-7).
TIE_DECIMALS = 6


@dataclass
class ChunkIndex:
    """One strategy's chunks held in memory for exact search: ids, offsets, texts and
    an (n, dim) matrix of L2-normalised vectors."""

    chunk_ids: list[str]
    doc_ids: list[str]
    starts: np.ndarray
    ends: np.ndarray
    texts: list[str]
    vectors: np.ndarray

    def hit(self, i: int, score: float) -> Hit:
        return Hit(self.doc_ids[i], int(self.starts[i]), int(self.ends[i]), self.texts[i], float(score))

    @classmethod
    def load(cls, table: Any, chunker_key: str, dim: int) -> "ChunkIndex":
        cols = ["chunk_id", "doc_id", "start", "end", "text", "vector"]
        q = table.search().select(cols).where(f"chunker_key = {quote(chunker_key)}").limit(None)
        t = q.to_arrow().sort_by([("doc_id", "ascending"), ("start", "ascending")])
        vecs = t.column("vector").combine_chunks().flatten().to_numpy(zero_copy_only=False).reshape(-1, dim)
        return cls(
            chunk_ids=t.column("chunk_id").to_pylist(),
            doc_ids=t.column("doc_id").to_pylist(),
            starts=t.column("start").to_numpy(),
            ends=t.column("end").to_numpy(),
            texts=t.column("text").to_pylist(),
            vectors=np.ascontiguousarray(vecs, dtype=np.float32),
        )


@dataclass
class RetrievalContext:
    """What every method may use for one strategy."""

    table: Any
    chunker_key: str
    index: ChunkIndex
    query_vectors: Mapping[str, np.ndarray]
    options: dict[str, Any] = field(default_factory=dict)
    _position: dict[str, int] | None = None

    def position(self, chunk_id: str) -> int:
        if self._position is None:
            self._position = {c: i for i, c in enumerate(self.index.chunk_ids)}
        return self._position[chunk_id]


def dense_top(ctx: RetrievalContext, queries: Sequence[Query], k: int) -> Iterator[tuple[Query, np.ndarray, np.ndarray]]:
    """Exact cosine kNN, one matrix product per block of queries (vectors are
    normalised, so the dot product is the cosine): yields ``(query, chunk positions,
    their scores)``, best first, ``min(k, n)`` of each.

    Equal scores (duplicated passages) are ordered by chunk position (the index is
    sorted by document and offset), so the top k never depends on k: argpartition
    alone picks an arbitrary subset of the chunks tied at the cut. Scores are compared
    at TIE_DECIMALS, because one vector scored in two places of a matrix product can
    differ in the last float32 bit."""
    mat = ctx.index.vectors
    n = mat.shape[0]
    k = min(k, n)
    for i in range(0, len(queries), 256):
        block = queries[i : i + 256]
        qv = np.stack([ctx.query_vectors[q.query_id] for q in block]).astype(np.float32)
        scores = qv @ mat.T
        keys = np.round(scores, TIE_DECIMALS)
        top = np.argpartition(-keys, k - 1, axis=1)[:, :k] if k < n else None
        for row, q in enumerate(block):
            if top is None:
                cand = np.arange(n)
            else:
                # Every chunk tied with the k-th one, not just those argpartition kept.
                cand = np.flatnonzero(keys[row] >= keys[row, top[row]].min())
            idx = cand[np.lexsort((cand, -keys[row, cand]))][:k]
            yield q, idx, scores[row, idx]


@RETRIEVERS.register("dense")
def dense(ctx: RetrievalContext, queries: Sequence[Query], k: int) -> dict[str, list[Hit]]:
    """Exact cosine kNN over the strategy's chunks."""
    if ctx.index.vectors.shape[0] == 0:
        return {q.query_id: [] for q in queries}
    return {q.query_id: [ctx.index.hit(j, s) for j, s in zip(idx, sc)] for q, idx, sc in dense_top(ctx, queries, k)}


@RETRIEVERS.register("bm25")
def bm25(ctx: RetrievalContext, queries: Sequence[Query], k: int) -> dict[str, list[Hit]]:
    """BM25 over the same chunks with LanceDB's native full-text index."""
    if not ctx.options.get("_fts_checked"):
        # Once per context: the evaluation times queries one by one, and the check
        # (about a millisecond) is no part of a query's latency.
        ensure_fts_index(ctx.table)
        ctx.options["_fts_checked"] = True
    where = f"chunker_key = {quote(ctx.chunker_key)}"
    out: dict[str, list[Hit]] = {}
    for q in queries:
        rows = (
            ctx.table.search(q.text, query_type="fts", fts_columns="text")
            .where(where, prefilter=True)
            .select(["chunk_id", "_score"])
            .limit(k)
            .to_list()
        )
        out[q.query_id] = [ctx.index.hit(ctx.position(r["chunk_id"]), r["_score"]) for r in rows]
    return out


def rrf(rankings: Sequence[Sequence[Hit]], k: int, c: int = RRF_K) -> list[Hit]:
    """Reciprocal-rank fusion of ranked hit lists (same chunks identified by doc and offsets)."""
    scores: dict[tuple[str, int, int], float] = {}
    hits: dict[tuple[str, int, int], Hit] = {}
    for ranking in rankings:
        for rank, h in enumerate(ranking):
            key = (h.doc_id, h.start, h.end)
            scores[key] = scores.get(key, 0.0) + 1.0 / (c + rank + 1)
            hits.setdefault(key, h)
    order = sorted(scores, key=lambda key: (-scores[key], key))[:k]
    return [Hit(hits[key].doc_id, hits[key].start, hits[key].end, hits[key].text, scores[key]) for key in order]


@RETRIEVERS.register("hybrid")
def hybrid(ctx: RetrievalContext, queries: Sequence[Query], k: int) -> dict[str, list[Hit]]:
    """Reciprocal-rank fusion of dense and bm25 (each ranked to depth ``k``)."""
    cache = ctx.options.setdefault("_runs", {})
    d = cache.get("dense") or dense(ctx, queries, k)
    b = cache.get("bm25") or bm25(ctx, queries, k)
    return {q.query_id: rrf([d.get(q.query_id, []), b.get(q.query_id, [])], k) for q in queries}


class SvmSettings(BaseModel):
    """The ``svm`` method: ``c`` is the SVM's regularisation (smaller: a softer margin),
    ``candidates`` how many dense hits it re-ranks (capped at the index size)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    c: float = 0.1
    candidates: int = 1000

    @field_validator("c")
    @classmethod
    def _c(cls, v: float) -> float:
        if not (math.isfinite(v) and v > 0):
            raise ValueError(f"svm C must be a positive finite number, got {v!r}")
        return v

    @field_validator("candidates")
    @classmethod
    def _candidates(cls, v: int) -> int:
        if v < 1:
            raise ValueError(f"svm candidates must be at least 1, got {v!r}")
        return v


def svm_scores(query_vector: np.ndarray, candidates: np.ndarray, c: float) -> np.ndarray:
    """Decision values of a linear SVM trained with the query as the only positive and
    the candidates as negatives (classes weighted to balance), one per candidate.

    The margin is shaped by the whole candidate set rather than the query alone, so
    features that every candidate shares count for less than in a plain cosine."""
    from sklearn.svm import LinearSVC

    x = np.vstack([query_vector[None, :], candidates]).astype(np.float64)
    y = np.zeros(len(x), dtype=np.int8)
    y[0] = 1
    # The primal solver: more samples than dimensions, where it is the faster one.
    clf = LinearSVC(C=c, class_weight="balanced", dual=False, tol=1e-4, max_iter=10000)
    with warnings.catch_warnings():
        # An unconverged fit still ranks; the warning per query would flood the log.
        warnings.simplefilter("ignore")
        clf.fit(x, y)
    return clf.decision_function(x[1:])


@RETRIEVERS.register("svm")
def svm(ctx: RetrievalContext, queries: Sequence[Query], k: int) -> dict[str, list[Hit]]:
    """Per query, a linear SVM (query positive, top-N dense candidates negative) ranks
    the candidates by decision value. Settings: ``ctx.options["svm"]`` (SvmSettings)."""
    opts = ctx.options.get("svm") or SvmSettings()
    if not isinstance(opts, SvmSettings):
        opts = SvmSettings.model_validate(opts)
    if ctx.index.vectors.shape[0] == 0:
        return {q.query_id: [] for q in queries}
    out: dict[str, list[Hit]] = {}
    mat = ctx.index.vectors
    for q, idx, _ in dense_top(ctx, queries, opts.candidates):
        scores = svm_scores(np.asarray(ctx.query_vectors[q.query_id]), mat[idx], opts.c)
        order = np.argsort(-scores, kind="stable")[:k]
        out[q.query_id] = [ctx.index.hit(int(idx[j]), scores[j]) for j in order]
    return out
