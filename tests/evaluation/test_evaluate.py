"""The evaluation flow end to end on a small span-labelled dataset the test writes,
and the regression check (the SciFact trust anchors are in test_anchors.py,
the suite's SciFact check in test_scifact.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from grainline.embedding import EmbedderSettings
from grainline.evaluation.datasets import DatasetError
from grainline.evaluation.results import find_regressions
from grainline.evaluation import EvalSettings, run_eval
from grainline.storage.chunks import connect


TOPICS = {
    "bees": [
        "Honeybees communicate the direction of flowers with a waggle dance.",
        "The angle of the waggle run relative to vertical matches the angle to the sun.",
        "Longer waggle runs tell the other foragers that the food is further away.",
    ],
    "tides": [
        "Tides are caused mainly by the gravity of the Moon pulling on the oceans.",
        "Spring tides happen when the Sun and the Moon line up at new and full moon.",
        "Neap tides are weaker and come when the Sun and Moon are at right angles.",
    ],
    "bread": [
        "A sourdough starter is a culture of wild yeast and lactic acid bacteria.",
        "Bakers feed the starter with flour and water to keep the microbes active.",
        "The bacteria make lactic acid, which gives sourdough its sour taste.",
    ],
    "glaciers": [
        "Glaciers form where more snow falls in winter than melts in summer.",
        "The ice flows downhill under its own weight, slowly grinding the rock beneath.",
        "Retreating glaciers leave moraines of rock and gravel behind them.",
    ],
}
QUESTIONS = [
    ("q1", "how do bees show other bees where food is", "bees", 0, "waggle dance"),
    ("q2", "what causes spring tides", "tides", 1, "the Sun and the Moon line up"),
    ("q3", "what gives sourdough bread its sour flavour", "bread", 2, "lactic acid"),
    ("q4", "what do glaciers leave behind when they melt back", "glaciers", 2, "moraines"),
    ("q5", "what pulls on the oceans to make tides", "tides", 0, "gravity of the Moon"),
]


def write_spans_fixture(folder):
    folder.mkdir(parents=True, exist_ok=True)
    texts = {}
    with open(folder / "documents.jsonl", "w") as f:
        for doc_id, sents in TOPICS.items():
            # two sentences per paragraph, so paragraphs and sentences differ
            text = " ".join(sents[:2]) + "\n\n" + sents[2]
            texts[doc_id] = text
            f.write(json.dumps({"id": doc_id, "title": doc_id, "text": text}) + "\n")
    with open(folder / "queries.jsonl", "w") as f:
        for qid, text, doc_id, sent_i, answer in QUESTIONS:
            sent = TOPICS[doc_id][sent_i]
            start = texts[doc_id].index(sent)
            f.write(json.dumps({"id": qid, "text": text, "answers": [answer],
                                "spans": [{"doc_id": doc_id, "start": start, "end": start + len(sent)}]}) + "\n")
        f.write(json.dumps({"id": "q-unlabelled", "text": "a question nobody labelled"}) + "\n")
    return folder


@pytest.mark.usefixtures("prefect_harness")
def test_evaluation_flow_end_to_end(tmp_path, embedder):
    from grainline.embedding import EmbedderSettings
    from grainline.evaluation.model import EvalSettings
    from grainline.flows.evaluate import evaluate_flow

    data = write_spans_fixture(tmp_path / "spans")
    db, reports = str(tmp_path / "db"), str(tmp_path / "reports")
    settings = EvalSettings(dataset=f"spans:{data}", db=db, embedder=EmbedderSettings(device="cpu"), reports_dir=reports)
    state = evaluate_flow(settings, return_state=True)
    assert state.is_completed()
    out = state.result()
    assert out["n_queries"] == 5 and out["skipped_queries"] == 1
    assert "best nDCG@10" in state.message and "no regressions" in state.message
    rows = out["results"]
    assert {(r["strategy"], r["method"]) for r in rows} == {
        (s, m) for s in ("sentence", "paragraph", "article", "sentence->paragraph", "paragraph->article")
        for m in ("dense", "bm25", "hybrid")
    }
    by = {(r["strategy"], r["method"], r["metric"]): r for r in rows}
    # with 4 clearly separated topics every method finds the right document first
    for s in ("sentence", "paragraph", "article"):
        for m in ("dense", "hybrid"):
            assert by[(s, m, "recall@1")]["value"] == 1.0
    # sentence chunks hit the gold sentence more precisely than whole articles
    assert by[("sentence", "dense", "span_precision@5")]["value"] > by[("article", "dense", "span_precision@5")]["value"]
    unknown = {(r["strategy"], r["method"], r["metric"]) for r in rows if r["value"] is None}
    assert not unknown, unknown
    for r in rows:
        assert r["ci_low"] <= r["value"] <= r["ci_high"]
        assert r["n_queries"] == 5 and r["table_version"] is not None
    # Each strategy's own table: its vectors are its rows, and its ingestion's ledger
    # row times their embedding (a figure, not unknown).
    conn = connect(db)
    for s in ("sentence", "paragraph", "article"):
        (name,) = {r["table_name"] for r in rows if r["strategy"] == s}
        n = conn.open_table(name).count_rows()
        assert by[(s, "dense", "cost_vectors")]["value"] == n and by[(s, "bm25", "cost_vectors")]["value"] == 0
        assert by[(s, "hybrid", "cost_vector_bytes")]["value"] == n * 384 * 4
        assert by[(s, "dense", "cost_embed_seconds_per_1k_docs")]["value"] > 0
        assert by[(s, "bm25", "cost_index_bytes")]["value"] > 0  # the BM25 index; no vector index here
        assert by[(s, "dense", "cost_index_bytes")]["value"] == 0
    report = (tmp_path / "reports" / out["run_id"] / "report.md").read_text()
    assert "| sentence | dense |" in report and "▲" in report and "p-values" in report
    assert "## Cost" in report and "BM25 stores no vectors: it reads the text index only" in report
    assert len(out["plots"]) == 4 and all(p.endswith(".png") for p in out["plots"])
    assert out["plots"][-1].endswith("quality_per_cost.png")  # the quality-per-cost view
    assert "recommendation: " in state.message and out["recommendation"]["metric"] == "span_recall@200tok"
    stored = connect(db).open_table("eval_results").to_arrow()
    assert stored.num_rows == len(rows)

    # a second run embeds only the queries and appends its own rows
    again = evaluate_flow(settings, return_state=True)
    assert again.result()["run_id"] != out["run_id"]
    from grainline.storage.ledger import Ledger

    ingests = Ledger(db).runs("ingest")
    assert ingests[-1]["chunks_embedded"] == 0 and ingests[-1]["docs_unchanged"] == 4
    assert connect(db).open_table("eval_results").count_rows() == 2 * len(rows)
    assert "no regressions" in again.message
    # The second run also draws the primary metric's history across the two runs.
    plots = again.result()["plots"]
    assert len(plots) == 5 and plots[-2].endswith("primary_metric_history.png")
    from grainline.evaluation.report import plot_images

    (img,) = [i for i in plot_images(plots) if i["name"] == "primary_metric_history"]
    assert img["data_uri"].startswith("data:image/png;base64,iVBORw0KGgo")

    # The flow run's artifacts hold the plots themselves (the UI cannot follow a file://
    # link): the report with every plot inline, and one artifact per plot.
    import asyncio
    import base64
    import re

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    async def artifacts(flow_run_id):
        async with get_client() as client:
            return await client.read_artifacts(artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))

    arts = {a.key: a for a in asyncio.run(artifacts(again.state_details.flow_run_id))}
    images = lambda md: re.findall(r"!\[([^\]]*)\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", md)  # noqa: E731
    inline = dict(images(arts["grainline-eval-report"].data))
    assert set(inline) == {Path(p).stem for p in plots}
    assert "## Cost" in arts["grainline-eval-report"].data  # the costs travel in the artifact
    assert "file://" not in arts["grainline-eval-report"].data
    for p in plots:
        stem = Path(p).stem
        ((name, b64),) = images(arts["grainline-eval-plot-" + stem.replace("_", "-")].data)
        png = base64.b64decode(b64)
        # the very image on disk, a PNG and not an empty one
        assert name == stem and png == Path(p).read_bytes() and png.startswith(b"\x89PNG") and len(png) > 2000
        assert base64.b64decode(inline[stem]) == png


def test_regression_is_a_metric_below_the_previous_interval():
    prev = [{"chunker_key": "k", "method": "dense", "metric": "ndcg@10", "value": 0.70, "ci_low": 0.65, "run_id": "old"}]
    now_ok = [{"chunker_key": "k", "method": "dense", "metric": "ndcg@10", "value": 0.66, "strategy": "paragraph"}]
    now_bad = [{"chunker_key": "k", "method": "dense", "metric": "ndcg@10", "value": 0.60, "strategy": "paragraph"}]
    assert find_regressions(now_ok, prev) == []
    (g,) = find_regressions(now_bad, prev)
    assert (g["metric"], g["previous_run"], g["previous_ci_low"]) == ("ndcg@10", "old", 0.65)
    other_key = [dict(now_bad[0], chunker_key="k2")]
    assert find_regressions(other_key, prev) == []


def test_bad_arguments_are_named(tmp_path):
    with pytest.raises(ValueError, match="unknown retrieval method 'svd'; known: bm25, dense, hybrid, svm"):
        EvalSettings(dataset="spans:x", methods="dense,svd")
    with pytest.raises(DatasetError, match="does not exist"):
        run_eval(EvalSettings(dataset=f"squad:{tmp_path}/nope.json", db=str(tmp_path / "db")))


def test_dataset_sweep_gives_one_configuration_per_combination(tmp_path, embedder):
    data = write_spans_fixture(tmp_path / "spans")
    run = run_eval(EvalSettings(
        dataset=f"spans:{data}", strategies="sentence", methods="dense", db=str(tmp_path / "db"),
        reports_dir=str(tmp_path / "reports"), chunk_sweep=["sentence.max_tokens=40,200", "sentence.overlap=0"],
        embedder=EmbedderSettings(device="cpu"), n_bootstrap=100, n_permutations=100,
    ))
    labels = [c.label for c in run.configs]
    assert labels == ["sentence(max_tokens=40)", "sentence(max_tokens=200)"]
    assert len({c.table_name for c in run.configs}) == 2
    assert {r["config"] for r in run.results} == set(labels)
    assert run.recommendation["config"] in {f"{lb}/dense" for lb in labels}
    # Every sentence is under 40 tokens: the second table's chunks are the first's, and
    # their vectors are reused by content hash rather than embedded again.
    from grainline.storage.ledger import Ledger

    first, second = Ledger(str(tmp_path / "db")).runs("ingest")[-2:]
    assert first["chunks_embedded"] == 12 and second["chunks_written"] == 12
    assert (second["chunks_embedded"], second["chunks_reused"]) == (0, 12)
    with pytest.raises(ValueError, match="overlap must be under half of max_tokens"):
        EvalSettings(dataset="spans:x", chunk_sweep=["paragraph.max_tokens=10"])


def test_documents_sample_keeps_the_queries_about_them(tmp_path):
    from grainline.evaluation.runner import load

    data = write_spans_fixture(tmp_path / "spans")
    run = load(EvalSettings(dataset=f"spans:{data}", sample_docs=2, seed=1))
    kept = {d.doc_id for d in run.dataset.documents}
    assert len(kept) == 2 and run.dataset.name.endswith("-docs2s1")
    assert run.queries and all(set(q.relevant) <= kept for q in run.queries)
    expected = {qid for qid, _t, doc, _i, _a in QUESTIONS if doc in kept}
    assert {q.query_id for q in run.queries} == expected
    with pytest.raises(ValueError, match="sample_docs samples a dataset"):
        EvalSettings(queries="x.jsonl", sample_docs=2)


def test_small_to_big_returns_the_parents_of_the_child_hits(tmp_path, embedder):
    """sentence->paragraph searches sentences and scores their paragraphs: the documents
    rank exactly as the sentences' do (a parent lies in its child's document), every
    span the top 5 sentences cover is covered by the top 5 paragraphs, and the hits are
    paragraph chunks, each once."""
    from grainline.evaluation import runner

    data = write_spans_fixture(tmp_path / "spans")
    settings = EvalSettings(dataset=f"spans:{data}", methods="dense,bm25", db=str(tmp_path / "db"),
                            reports_dir=str(tmp_path / "reports"), embedder=EmbedderSettings(device="cpu"),
                            n_bootstrap=100, n_permutations=100)
    run = run_eval(settings)
    names = [c.name for c in run.configs]
    assert names[-4:] == ["sentence->paragraph/dense", "sentence->paragraph/bm25",
                          "paragraph->article/dense", "paragraph->article/bm25"]
    for child, pair in (("sentence", "sentence->paragraph"), ("paragraph", "paragraph->article")):
        for method in ("dense", "bm25"):
            small, big = run.per_query[f"{child}/{method}"], run.per_query[f"{pair}/{method}"]
            assert small.keys() == big.keys()
            for qid in small:
                for m in ("ndcg@10", "recall@1", "mrr@10"):
                    assert big[qid][m] == small[qid][m], (pair, method, qid, m)
                assert big[qid]["span_recall@5"] >= small[qid]["span_recall@5"] - 1e-12
    # the hits themselves: parent chunks of the paragraph table, no parent twice
    (cfg,) = [c for c in run.configs if c.name == "sentence->paragraph/dense"]
    (pcfg,) = [c for c in run.configs if c.name == "paragraph/dense"]
    dim = embedder.identity.dim
    _t, child_index = runner._load_index(run, cfg, dim)
    _t, pindex = runner._load_index(run, pcfg, dim)
    from grainline.chunkers.nesting import Parents
    from grainline.evaluation.retrieval import RETRIEVERS, RetrievalContext

    vectors = runner.embed_queries(run)
    ctx = RetrievalContext(table=_t, chunker_key=cfg.chunker_key.split(">")[0], index=child_index,
                           query_vectors=vectors)
    parents = Parents((d, int(a), int(b), i) for i, (d, a, b) in enumerate(zip(pindex.doc_ids, pindex.starts, pindex.ends)))
    paragraphs = set(zip(pindex.doc_ids, pindex.starts.tolist(), pindex.ends.tolist()))
    for qid, hits in RETRIEVERS.get("dense")(ctx, run.queries, 50).items():
        up = runner.parent_hits(hits, pindex, parents)
        spans = [(h.doc_id, h.start, h.end) for h in up]
        assert len(spans) == len(set(spans)) and set(spans) <= paragraphs
        assert up[0].score == hits[0].score and up[0].doc_id == hits[0].doc_id
        assert up[0].start <= hits[0].start and hits[0].end <= up[0].end
    # off, and a pair that is not small-to-big
    assert EvalSettings(dataset="spans:x", small_to_big="none").small_to_big == []
    with pytest.raises(ValueError, match="can only return a coarser strategy"):
        EvalSettings(dataset="spans:x", small_to_big=["article->sentence"])
