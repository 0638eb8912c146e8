"""The ``svm`` retrieval method: a linear SVM per query over the top dense candidates."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from grainline.documents import Document
from grainline.embedding import EmbedderSettings
from grainline.evaluation.datasets import Query
from grainline.evaluation.retrieval import RETRIEVERS, ChunkIndex, RetrievalContext, SvmSettings, svm_scores
from grainline.evaluation import EvalSettings, run_eval
from grainline.ingest import IngestSettings, make_plans, run_ingest
from grainline.storage.chunks import connect

from tests.evaluation.test_evaluate import write_spans_fixture

QUERY = "how do honeybees tell the hive where the flowers are"
SENTENCES = [
    "Honeybees perform a waggle dance to show foragers the direction of flowers.",
    "Scout bees report the distance to nectar with the length of their dance.",
    "A bumblebee colony is much smaller than a honeybee hive.",
    "Beekeepers smoke the hive to calm the bees before opening it.",
    "Tides rise twice a day as the Moon pulls on the oceans.",
    "Sourdough bread is leavened by wild yeast and lactic acid bacteria.",
    "Glaciers grind the rock beneath them as they flow downhill.",
    "The stock market fell sharply after the interest rate decision.",
    QUERY,  # the exact duplicate of the query, somewhere in the middle
    "Volcanic eruptions can cool the climate for a year or two.",
    "Chess engines search millions of positions every second.",
    "Flowers attract pollinators with colour, scent and nectar.",
]


@pytest.fixture(scope="module")
def sentence_index(tmp_path_factory, embedder):
    """The sentences above, ingested for real (one document each) and loaded back."""
    db = str(tmp_path_factory.mktemp("svm") / "db")
    docs = [Document(doc_id=f"d{i:02d}", text=t, source="test") for i, t in enumerate(SENTENCES)]
    settings = IngestSettings(source="test", strategies=["sentence"], db=db, export_parquet=False,
                              embedder=EmbedderSettings(device="cpu"))
    rec = run_ingest(settings, documents=docs)
    (plan,) = make_plans(settings, embedder)
    table = connect(db).open_table(rec.table_name)
    return table, plan.key, ChunkIndex.load(table, plan.key, embedder.identity.dim)


def _context(sentence_index, embedder, texts: dict[str, str], **options) -> RetrievalContext:
    table, key, index = sentence_index
    vecs = embedder.embed_queries(list(texts.values()))
    return RetrievalContext(table=table, chunker_key=key, index=index,
                            query_vectors=dict(zip(texts, vecs)), options=options)


def test_exact_duplicate_of_the_query_comes_first(sentence_index, embedder):
    ctx = _context(sentence_index, embedder, {"q": QUERY})
    hits = RETRIEVERS.get("svm")(ctx, [Query("q", QUERY, {"d08": 1})], 5)["q"]
    assert hits[0].text == QUERY and hits[0].doc_id == "d08"
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    # the other bee sentences follow before anything about tides or stock markets
    assert {h.doc_id for h in hits[1:3]} <= {"d00", "d01", "d02", "d03", "d11"}


def test_candidates_limit_what_is_reranked(sentence_index, embedder):
    ctx = _context(sentence_index, embedder, {"q": "what makes sourdough taste sour"},
                   svm=SvmSettings(candidates=3, c=1.0))
    dense_top3 = [h.doc_id for h in RETRIEVERS.get("dense")(ctx, [Query("q", "x", {})], 3)["q"]]
    svm_hits = RETRIEVERS.get("svm")(ctx, [Query("q", "x", {})], 10)["q"]
    assert len(svm_hits) == 3 and sorted(h.doc_id for h in svm_hits) == sorted(dense_top3)
    assert svm_hits[0].doc_id == "d05"
    # more candidates than chunks: every chunk is ranked once
    ctx.options["svm"] = {"candidates": 10_000}
    assert len(RETRIEVERS.get("svm")(ctx, [Query("q", "x", {})], 50)["q"]) == len(SENTENCES)


def test_svm_scores_prefer_the_query_direction():
    rng = np.random.default_rng(0)
    negatives = rng.standard_normal((200, 16))
    negatives /= np.linalg.norm(negatives, axis=1, keepdims=True)
    q = negatives[17] + 0.05 * rng.standard_normal(16)
    q /= np.linalg.norm(q)
    scores = svm_scores(q, negatives, c=0.1)
    assert scores.shape == (200,) and int(np.argmax(scores)) == 17
    # a larger C fits the single positive harder; the winner stays the same
    assert int(np.argmax(svm_scores(q, negatives, c=10.0))) == 17


@pytest.mark.parametrize(("field", "value", "message"), [
    ("c", -1.0, "svm C must be a positive finite number, got -1.0"),
    ("c", 0, "svm C must be a positive finite number, got 0"),
    ("c", float("nan"), "svm C must be a positive finite number, got nan"),
    ("candidates", 0, "svm candidates must be at least 1, got 0"),
])
def test_bad_svm_settings_name_the_value(field, value, message):
    with pytest.raises(ValidationError, match=message):
        SvmSettings(**{field: value})
    with pytest.raises(ValidationError, match=message):
        EvalSettings(dataset="spans:x", methods="svm", svm={field: value})


def test_svm_in_the_evaluation_beside_dense(tmp_path, embedder):
    data = write_spans_fixture(tmp_path / "spans")
    run = run_eval(EvalSettings(
        dataset=f"spans:{data}", strategies="sentence", methods="dense,svm", db=str(tmp_path / "db"),
        reports_dir=str(tmp_path / "reports"), embedder=EmbedderSettings(device="cpu"),
        n_bootstrap=100, n_permutations=100, svm={"c": 0.5, "candidates": 50},
    ))
    by = {(r["method"], r["metric"]): r["value"] for r in run.results}
    # four well separated topics: the SVM finds the right document first, as dense does
    assert by[("svm", "recall@1")] == by[("dense", "recall@1")] == 1.0
    assert "| sentence | svm |" in (tmp_path / "reports" / run.run_id / "report.md").read_text()
