"""Dense retrieval orders equal scores by chunk position, so the top k does not depend
on how deep the retrieval goes (a corpus with duplicated passages)."""

from __future__ import annotations

import numpy as np

from grainline.evaluation.datasets import Query
from grainline.evaluation.retrieval import RETRIEVERS, ChunkIndex, RetrievalContext


def _index_with_duplicates(n: int = 400, copies: int = 40, dim: int = 16, seed: int = 0) -> tuple[ChunkIndex, np.ndarray]:
    rng = np.random.default_rng(seed)
    vecs = rng.normal(size=(n, dim)).astype(np.float32)
    dup = rng.normal(size=dim).astype(np.float32)
    where = np.sort(rng.choice(n, size=copies, replace=False))
    vecs[where] = dup  # the same passage in many documents
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    ids = [f"c{i:04d}" for i in range(n)]
    return ChunkIndex(ids, [f"d{i:04d}" for i in range(n)], np.zeros(n, dtype=np.int64), np.full(n, 10, dtype=np.int64),
                      ["x"] * n, np.ascontiguousarray(vecs)), where


def test_dense_top_k_is_the_same_at_every_depth():
    index, where = _index_with_duplicates()
    queries = [Query(f"q{i}", "duplicated passage", {}) for i in range(3)]
    ctx = RetrievalContext(table=None, chunker_key="k", index=index,
                           query_vectors={q.query_id: index.vectors[where[0]] for q in queries})
    tops = {depth: {q: [h.doc_id for h in hits[:5]] for q, hits in RETRIEVERS.get("dense")(ctx, queries, depth).items()}
            for depth in (5, 10, 100, 1000)}
    expected = [f"d{i:04d}" for i in where[:5]]  # the first copies by position
    for depth, by_query in tops.items():
        for qid, docs in by_query.items():
            assert docs == expected, (depth, qid, docs)
