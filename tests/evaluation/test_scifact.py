"""The SciFact trust anchors on the real data (../shared/data/scifact): the fp32 run over
whole abstracts is built once for this module, and the int8 check re-ranks a candidate
corpus drawn from it (tests/scifact.py says why that bound holds). A module of its own,
so that under xdist's loadfile scheduling the rest of the evaluation tests run beside it.

Both databases are kept between sessions, keyed by everything their vectors depend on
(tests/scifact.py: ``cached_scifact``); a kept one is copied in and its ingestion embeds
nothing, while retrieval, scoring and the assertions run in full."""

from __future__ import annotations

import pytest

from grainline.embedding import EmbedderSettings

from tests.conftest import SHARED_DATA

SCIFACT = SHARED_DATA / "scifact"
# Each query's fp32 top CANDIDATE_K join the int8 check's candidate corpus (tests/scifact.py).
CANDIDATE_K = 30


@pytest.fixture(scope="module")
def scifact_fp32(tmp_path_factory):
    """SciFact test queries over whole abstracts, fp32 on CPU: one run, shared by every
    SciFact test (a module is one unit of work for the parallel workers)."""
    if not SCIFACT.exists():
        pytest.skip(f"SciFact not found at {SCIFACT}")
    from tests.scifact import cache_key, cached_scifact

    settings = EmbedderSettings(device="cpu")
    key = cache_key("fp32", settings.model_dump_json(), files=[SCIFACT / "corpus.jsonl", SCIFACT / "queries.jsonl",
                                                                 SCIFACT / "qrels" / "test.tsv"])
    base, warm = cached_scifact("scifact-fp32", key, SCIFACT, tmp_path_factory.mktemp("scifact-fp32"), settings)
    print(f"\nSciFact fp32 database {'kept from an earlier session' if warm else 'built'} (key {key})")
    assert len(base.run.queries) == 300
    return base


@pytest.mark.dataset
def test_scifact_trust_anchors(scifact_fp32):
    """Whole abstracts, all-MiniLM-L6-v2 truncated at 256 tokens: nDCG@10 within 0.01 of
    the published 0.645; BM25 within 0.02 of the published 0.665-0.687."""
    by = scifact_fp32.by
    assert abs(by[("dense", "ndcg@10")] - 0.645) <= 0.01, by[("dense", "ndcg@10")]
    assert 0.665 - 0.02 <= by[("bm25", "ndcg@10")] <= 0.687 + 0.02, by[("bm25", "ndcg@10")]


@pytest.mark.dataset
def test_scifact_openvino_int8_within_001_of_fp32(tmp_path, scifact_fp32):
    """The int8 CPU fast path (OpenVINO, NNCF-quantised) keeps SciFact nDCG@10 within
    0.01 of the fp32 run on the same queries.

    int8 embeds the candidate corpus only: every document the qrels name and each
    query's fp32 top 30 (tests/scifact.py says why that decides the comparison). fp32's
    nDCG@10 over it is its whole-corpus value; int8's is an upper bound of int8's
    whole-corpus value, which ``outside_bound`` bounds from below."""
    from tests.scifact import cache_key, cached_scifact, candidate_ids, outside_bound, restricted_ndcg, write_candidate_folder

    fp32 = scifact_fp32.by[("dense", "ndcg@10")]
    ids = candidate_ids(scifact_fp32, SCIFACT / "qrels" / "test.tsv", CANDIDATE_K)
    assert restricted_ndcg(scifact_fp32, ids) == pytest.approx(fp32, abs=1e-9)
    folder = write_candidate_folder(SCIFACT, tmp_path / "scifact", ids)
    settings = EmbedderSettings(backend="openvino", precision="int8")
    key = cache_key("int8", settings.model_dump_json(), CANDIDATE_K, sorted(ids), files=[folder / "corpus.jsonl"])
    other, _warm = cached_scifact("scifact-int8", key, folder, tmp_path, settings, methods="dense")
    assert len(other.run.queries) == 300 and len(other.run.dataset.documents) == len(ids)
    int8 = other.by[("dense", "ndcg@10")]
    bound = outside_bound(scifact_fp32, other, margin=1.0)
    print(f"int8 {int8:.4f} over {len(ids)} of {len(scifact_fp32.run.dataset.documents)} documents, fp32 {fp32:.4f}; "
          f"eps {bound['eps']:.4f}, {len(bound['reached'])} queries reachable from outside, worst loss {bound['loss']:.4f}")
    assert abs(int8 - fp32) <= 0.01, (int8, fp32)
    # int8 over the whole corpus is at least int8 over C less the worst loss, if no
    # document outside C changes its score more than the largest change seen over C.
    assert int8 - bound["loss"] >= fp32 - 0.01, (int8, bound, fp32)
