"""SciFact retrieval quality on the real data (../shared/data/scifact), sized for every
CI run: the 300 test queries over a seeded subset of the corpus (every cited abstract
and a seeded sample of distractors, tests/scifact.py), fp32 on the fastest exact
backend, against the figures that subset gives; and the int8 fast path against fp32 on
the same subset. A module of its own, so that under xdist's loadfile scheduling the
other tests run beside it.

The published anchors over the whole corpus (dense 0.645, BM25 0.665-0.687) are not
here: ``scripts/anchors.sh`` runs them (tests/evaluation/test_anchors.py), before any
change to chunking, embedding, retrieval or metrics lands.

Both databases are kept between sessions, keyed by everything their vectors depend on
(tests/scifact.py: ``cached_scifact``); a kept one is copied in and its ingestion embeds
nothing, while retrieval, scoring and the assertions run in full."""

from __future__ import annotations

import pytest

from grainline.embedding import EmbedderSettings

from tests.conftest import SHARED_DATA

SCIFACT = SHARED_DATA / "scifact"
# What the subset gives (fp32, whole abstracts truncated at 256 tokens), measured with
# `python -m tests.scifact subset DIR` and `grainline eval --dataset beir:DIR ...`
# (docs/development.md). The full corpus gives 0.645 and 0.684 (test_anchors.py).
SUBSET_DENSE = 0.846
SUBSET_BM25 = 0.848
# Float sums differ a little from CPU to CPU and between torch and OpenVINO fp32 (the
# fastest exact backend is chosen per machine): a few swapped ranks move the mean by
# thousandths. A real break moves it by far more (docs/development.md lists the breaks tried).
BAND = 0.01


@pytest.fixture(scope="module")
def subset(tmp_path_factory):
    """The suite's SciFact subset as a BEIR folder, and its document ids."""
    if not SCIFACT.exists():
        pytest.skip(f"SciFact not found at {SCIFACT}")
    from tests.scifact import subset_ids, write_subset_folder

    ids = subset_ids(SCIFACT)
    return write_subset_folder(SCIFACT, tmp_path_factory.mktemp("scifact-subset") / "scifact", ids), ids


@pytest.fixture(scope="module")
def subset_fp32(subset, tmp_path_factory):
    """SciFact test queries over the subset, fp32 on CPU (the faster of torch and
    OpenVINO, both torch fp32's vectors): one run, shared by the module's tests."""
    from tests.scifact import cache_key, cached_scifact

    folder, ids = subset
    settings = EmbedderSettings(device="cpu", precision="fp32")
    key = cache_key("subset-fp32", settings.model_dump_json(), sorted(ids),
                    files=[folder / "corpus.jsonl", folder / "queries.jsonl", folder / "qrels" / "test.tsv"])
    run, warm = cached_scifact("scifact-subset-fp32", key, folder, tmp_path_factory.mktemp("subset-fp32"), settings)
    print(f"\nSciFact subset fp32 database {'kept from an earlier session' if warm else 'built'} (key {key}): "
          f"dense {run.by[('dense', 'ndcg@10')]:.4f}, bm25 {run.by[('bm25', 'ndcg@10')]:.4f}; "
          f"seconds {({k: round(v, 1) for k, v in run.run.seconds.items()})}")
    assert len(run.run.queries) == 300 and len(run.run.dataset.documents) == len(ids)
    return run


@pytest.mark.dataset
def test_scifact_subset_keeps_its_figures(subset_fp32):
    """The 300 test queries over the subset (whole abstracts, all-MiniLM-L6-v2 truncated
    at 256 tokens): dense and BM25 nDCG@10 within 0.01 of what the subset gives. A wrong
    pooling, shuffled vectors or a broken BM25 tokeniser moves them by more (tried:
    docs/development.md)."""
    by = subset_fp32.by
    assert abs(by[("dense", "ndcg@10")] - SUBSET_DENSE) <= BAND, by[("dense", "ndcg@10")]
    assert abs(by[("bm25", "ndcg@10")] - SUBSET_BM25) <= BAND, by[("bm25", "ndcg@10")]


@pytest.mark.dataset
def test_scifact_openvino_int8_within_001_of_fp32(tmp_path, subset, subset_fp32):
    """The int8 CPU fast path (OpenVINO, NNCF-quantised) keeps SciFact nDCG@10 within
    0.01 of fp32 on the same queries over the same subset of the corpus."""
    from tests.scifact import cache_key, cached_scifact

    folder, ids = subset
    fp32 = subset_fp32.by[("dense", "ndcg@10")]
    settings = EmbedderSettings(backend="openvino", precision="int8")
    key = cache_key("subset-int8", settings.model_dump_json(), sorted(ids), files=[folder / "corpus.jsonl"])
    other, _warm = cached_scifact("scifact-subset-int8", key, folder, tmp_path, settings, methods="dense")
    assert len(other.run.queries) == 300 and len(other.run.dataset.documents) == len(ids)
    int8 = other.by[("dense", "ndcg@10")]
    print(f"int8 {int8:.4f}, fp32 {fp32:.4f} over {len(ids)} documents")
    assert abs(int8 - fp32) <= 0.01, (int8, fp32)
