"""The published SciFact trust anchors over the whole corpus (../shared/data/scifact,
5,183 abstracts): not part of the default suite, since embedding the corpus takes about
5 minutes on a Zen 4 and 27 on a Zen 1. Run them with ``bash scripts/anchors.sh`` (the
``anchors`` marker: fp32 on the fastest exact backend, both cores) before any change to
chunking, embedding, retrieval or metrics lands (docs/development.md). The suite's
CI-sized check is tests/evaluation/test_scifact.py (the same queries over a seeded
subset).

The database is kept between sessions, keyed by everything its vectors depend on
(tests/scifact.py: ``cached_scifact``; GRAINLINE_TEST_CACHE=off builds it afresh); a
kept one is copied in and its ingestion embeds nothing, while retrieval, scoring and
the assertions run in full."""

from __future__ import annotations

import pytest

from grainline.embedding import EmbedderSettings

from tests.conftest import SHARED_DATA

SCIFACT = SHARED_DATA / "scifact"


@pytest.mark.anchors
@pytest.mark.dataset
def test_scifact_trust_anchors(tmp_path):
    """Moved out of the default suite: run by ``bash scripts/anchors.sh``.

    Whole abstracts, all-MiniLM-L6-v2 in fp32 truncated at 256 tokens, the 300 test
    queries over the whole corpus: nDCG@10 within 0.01 of the published 0.645; BM25
    within 0.02 of the published 0.665-0.687."""
    if not SCIFACT.exists():
        pytest.skip(f"SciFact not found at {SCIFACT}")
    from tests.scifact import cache_key, cached_scifact

    settings = EmbedderSettings(device="cpu", precision="fp32")
    key = cache_key("fp32", settings.model_dump_json(), files=[SCIFACT / "corpus.jsonl", SCIFACT / "queries.jsonl",
                                                                 SCIFACT / "qrels" / "test.tsv"])
    base, warm = cached_scifact("scifact-fp32", key, SCIFACT, tmp_path, settings)
    assert len(base.run.queries) == 300 and len(base.run.dataset.documents) == 5183
    dense, bm25 = base.by[("dense", "ndcg@10")], base.by[("bm25", "ndcg@10")]
    from grainline.embedding import get_embedder

    print(f"\nSciFact full corpus ({'kept database' if warm else 'built'}, key {key}; fp32 on "
          f"{get_embedder(settings).backend_choice.describe()}): dense nDCG@10 {dense:.4f} (published 0.645), "
          f"BM25 nDCG@10 {bm25:.4f} (published 0.665-0.687)")
    assert abs(dense - 0.645) <= 0.01, dense
    assert 0.665 - 0.02 <= bm25 <= 0.687 + 0.02, bm25
