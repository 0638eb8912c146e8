"""What each configuration costs, and the recommendation that prices the tie.

The rule on hand-built runs (``recommend()``: the cheapest tied configuration by the
named cost, unknown costs passed over with the reason, ``prefer="quality"`` the
highest mean), then ``grainline eval`` in subprocesses on the bundled demo corpus:
the cost figures in ``eval_results`` against what the table holds, the recommendation
against those figures, ``--prefer quality``, a table without ledger rows, and a bad
``--cost`` in one line."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest

from grainline.evaluation.costs import COST_NAMES, ConfigCost
from grainline.evaluation.datasets import EvalDataset, Query
from grainline.evaluation.model import Config, CostError, EvalRun, EvalSettings, recommendation_line
from grainline.evaluation.runner import recommend

METRIC = "ndcg@10"


def _run(means: dict[str, float], tied_p: dict[str, float], vectors: dict[str, float | None], **settings) -> EvalRun:
    """A run whose configurations (``label/method``) have the given means of the primary
    metric, p-values against the best, and vectors stored (None: unknown)."""
    s = EvalSettings(dataset="spans:/nowhere", primary=METRIC, **settings)
    ds = EvalDataset("hand", "test", "/nowhere", [], [Query("q1", "x", {"d": 1})], [], {})
    run = EvalRun(settings=s, run_id="eval-test", dataset=ds, queries=ds.queries)
    best = max(means, key=means.get)
    for name, mean in means.items():
        label, method = name.split("/")
        run.configs.append(Config(label, label, "{}", method))
        run.results.append({"config": label, "method": method, "metric": METRIC, "value": mean,
                            "ci_low": mean - 0.05, "ci_high": mean + 0.05, "n_queries": 40})
        cost = ConfigCost()
        if vectors[name] is None:
            cost.unknown("cost_vectors", "no table")
        else:
            cost.values["cost_vectors"] = vectors[name]
        # Latency: the reverse order of vectors, so the two costs pick differently.
        cost.values["cost_latency_p50_ms"] = 1000.0 - (vectors[name] or 0)
        run.costs[name] = cost
    run.significance[METRIC] = {(best, n): tied_p.get(n, 0.001) for n in means if n != best}
    return run


MEANS = {"sentence/dense": 0.52, "paragraph/dense": 0.50, "article/dense": 0.30, "paragraph/hybrid": 0.49}
P = {"paragraph/dense": 0.40, "paragraph/hybrid": 0.20}  # article/dense: significantly worse
VECTORS = {"sentence/dense": 800.0, "paragraph/dense": 176.0, "article/dense": 25.0, "paragraph/hybrid": 176.0}


def test_the_cheapest_tied_configuration_is_recommended_with_its_share():
    rec = recommend(_run(MEANS, P, VECTORS))
    # article/dense is cheaper still, but not tied; paragraph/hybrid costs the same as
    # paragraph/dense and has the lower mean.
    assert rec["config"] == "paragraph/dense" and rec["best"]["config"] == "sentence/dense"
    assert rec["cost"] == "vectors" and rec["cost_value"] == 176.0 and rec["best"]["cost_value"] == 800.0
    line = recommendation_line(rec)
    assert line.startswith("recommendation: paragraph/dense: ndcg@10 0.500 [0.450-0.550], 40 queries, "
                           "tied with the best sentence/dense 0.520 (p = 0.40) at 22 % of its vectors stored"), line
    assert "paragraph/hybrid 0.490" in line and "article/dense" not in line

    # Another cost, another choice: latency here runs against the vectors.
    rec = recommend(_run(MEANS, P, VECTORS, cost=["latency"]))
    assert rec["config"] == "sentence/dense" and rec["cost"] == "latency"
    assert "the best, and the cheapest of the 3 tied by p50 query latency" in recommendation_line(rec)


def test_prefer_quality_keeps_the_highest_mean():
    rec = recommend(_run(MEANS, P, VECTORS, prefer="quality"))
    assert rec["config"] == "sentence/dense" and rec["cost"] is None
    line = recommendation_line(rec)
    assert "the highest mean of the tied (--prefer quality)" in line and "paragraph/dense 0.500 (p=0.4)" in line


def test_an_unknown_cost_is_never_the_cheapest_and_says_why():
    unknown = dict(VECTORS, **{"paragraph/dense": None})
    # vectors unknown for a tied configuration: the next cost named decides, and the line says why.
    rec = recommend(_run(MEANS, P, unknown, cost=["vectors", "latency"]))
    assert rec["cost"] == "latency" and rec["config"] == "sentence/dense"
    assert "--cost vectors passed over: unknown for paragraph/dense (no table)" in recommendation_line(rec)
    # No cost left: the highest mean, and why.
    rec = recommend(_run(MEANS, P, unknown))
    assert rec["config"] == "sentence/dense" and rec["cost"] is None
    assert "passed over: unknown for paragraph/dense (no table); fell back to the highest mean" in recommendation_line(rec)
    # An unknown cost of a configuration outside the tie does not matter.
    rec = recommend(_run(MEANS, P, dict(VECTORS, **{"article/dense": None})))
    assert rec["config"] == "paragraph/dense" and not rec["fallback"]


def test_cost_names_are_checked():
    assert EvalSettings(dataset="spans:/x", cost="embed_seconds, vectors").cost == ["embed_seconds", "vectors"]
    with pytest.raises(Exception) as err:
        EvalSettings(dataset="spans:/x", cost="vectros")
    assert isinstance(err.value.errors()[0]["ctx"]["error"], CostError)
    assert "known: " + ", ".join(COST_NAMES) in str(err.value)


# ---- through the CLI, on the bundled demo corpus --------------------------------------


def cli(*args: str, home: str, timeout: int = 900) -> subprocess.CompletedProcess:
    import os

    env = dict(os.environ, PREFECT_HOME=home, PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="300")
    return subprocess.run([sys.executable, "-m", "grainline.cli", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The demo corpus ingested (all three strategies) and a headings query set on it."""
    from grainline import DEMO_CORPUS
    from grainline.embedding import EmbedderSettings
    from grainline.ingest import IngestSettings, run_ingest

    root = tmp_path_factory.mktemp("demo-costs")
    db = str(root / "db")
    rec = run_ingest(IngestSettings(source=str(DEMO_CORPUS), db=db, embedder=EmbedderSettings(device="cpu"),
                                    export_parquet=False))
    qs = root / "headings.jsonl"
    res = cli("queries", "generate", "--from", "headings", "--db", db, "--out", str(qs), home=str(root / "ph"))
    assert res.returncode == 0, res.stderr
    return root, db, rec.table_name, qs


def _rec_line(stdout: str) -> str:
    return stdout.strip().splitlines()[-1]


def _rows(db: str) -> list[dict]:
    from grainline.storage.chunks import connect

    rows = connect(db).open_table("eval_results").to_arrow().to_pylist()
    last = max(r["time"] for r in rows)
    return [r for r in rows if r["time"] == last]


@pytest.mark.slow
def test_costs_and_the_priced_recommendation_on_the_demo_corpus(demo, tmp_path):
    root, db, table_name, qs = demo
    from grainline.storage.chunks import connect

    table = connect(db).open_table(table_name)
    dim = len(table.search().select(["vector"]).limit(1).to_list()[0]["vector"])
    rows_by_key = {}
    for r in table.search().select(["chunker_key", "strategy", "doc_id", "n_model_tokens"]).limit(None).to_list():
        rows_by_key.setdefault((r["strategy"], r["chunker_key"]), []).append(r)
    reports = tmp_path / "reports"
    common = ("--queries", str(qs), "--db", db, "--device", "cpu", "--reports", str(reports), "--method", "dense,hybrid")
    res = cli("eval", *common, "--cost", "latency", home=str(root / "ph"))
    assert res.returncode == 0, res.stderr[-3000:] + res.stdout[-3000:]
    rows = _rows(db)
    cost = {(r["config"], r["method"], r["metric"]): r["value"] for r in rows if r["metric"].startswith("cost_")}
    # The figures are what the table holds: vectors = its rows of that chunker key,
    # bytes = rows x dim x 4, chunks per document, model tokens per document.
    for (strategy, key), chunks in rows_by_key.items():
        docs = len({c["doc_id"] for c in chunks})
        for method in ("dense", "hybrid"):
            assert cost[(strategy, method, "cost_vectors")] == len(chunks)
            assert cost[(strategy, method, "cost_vector_bytes")] == len(chunks) * dim * 4
            assert cost[(strategy, method, "cost_chunks_per_doc")] == pytest.approx(len(chunks) / docs)
            assert cost[(strategy, method, "cost_model_tokens_per_doc")] == pytest.approx(
                sum(c["n_model_tokens"] for c in chunks) / docs)
            assert cost[(strategy, method, "cost_embed_seconds_per_1k_docs")] > 0  # the ledger has the ingestion
            p50, p95 = cost[(strategy, method, "cost_latency_p50_ms")], cost[(strategy, method, "cost_latency_p95_ms")]
            assert 0 < p50 <= p95
        # The table's vector index is charged by rows; hybrid reads the text index too.
        assert 0 < cost[(strategy, "dense", "cost_index_bytes")] < cost[(strategy, "hybrid", "cost_index_bytes")]
    # small-to-big searches the child's vectors
    assert cost[("sentence->paragraph", "dense", "cost_vectors")] == cost[("sentence", "dense", "cost_vectors")]
    report = next(reports.glob("*/report.md")).read_text(encoding="utf-8")
    assert "## Cost" in report and "| vectors | vector bytes | index bytes |" in report
    # the quality-per-cost view: a frontier column and the plot, linked from the report
    assert "| on the frontier |" in report and "![quality_per_cost](quality_per_cost.png)" in report
    assert next(reports.glob("*/quality_per_cost.png")).stat().st_size > 0
    assert "ledger: " in report and "counted from the stored chunks' n_model_tokens" in report

    # The recommendation is the tied configuration with the lowest p50 latency.
    line = _rec_line(res.stdout)
    m = re.match(r"recommendation: (\S+): span_recall@200tok .*tied with the best (\S+) [0-9.]+ \(p = ([0-9.]+)\) "
                 r"at (\d+) % of its p50 query latency", line)
    assert m, line
    pick, best, share = m.group(1), m.group(2), int(m.group(4))
    lat = lambda name: cost[(*name.rsplit("/", 1), "cost_latency_p50_ms")]  # noqa: E731
    assert pick != best and lat(pick) < lat(best) and share == round(100 * lat(pick) / lat(best))
    tied = [best, pick] + re.findall(r"(\S+/\S+) [0-9.]+ \(p=", line.split("statistically tied")[-1] if "statistically tied" in line else "")
    assert lat(pick) == min(lat(n) for n in tied)

    # --prefer quality: the old choice, the best.
    res = cli("eval", *common, "--cost", "latency", "--prefer", "quality", home=str(root / "ph"))
    assert res.returncode == 0, res.stderr[-3000:]
    assert _rec_line(res.stdout).startswith(f"recommendation: {best}: ")
    assert "(--prefer quality)" in _rec_line(res.stdout)

    # A table with no ledger rows: embedding time is unknown, with why, never 0; a
    # recommendation priced by it passes it over for the next cost named.
    shutil.rmtree(f"{db}/runs.lance")
    res = cli("eval", *common, "--cost", "embed_seconds,vectors", home=str(root / "ph"))
    assert res.returncode == 0, res.stderr[-3000:]
    rows = _rows(db)
    embed = [r for r in rows if r["metric"] == "cost_embed_seconds_per_1k_docs"]
    assert embed and all(r["value"] is None for r in embed)
    report = sorted(reports.glob("*/report.md"), key=lambda p: p.stat().st_mtime)[-1].read_text(encoding="utf-8")
    assert f"no ingestion of table {table_name} in the ledger" in report
    costs = report.split("## Cost")[1].split("## Recommendation")[0]
    cells = next(x for x in costs.splitlines() if x.startswith("| paragraph | dense |")).split(" | ")
    assert cells[8] == "unknown" and cells[4] != "unknown"  # embed s / 1k docs; vectors still counted
    line = _rec_line(res.stdout)
    assert "--cost embed_seconds passed over: unknown for" in line and "no ingestion of table" in line
    assert "vectors stored" in line


def test_an_unknown_cost_name_is_one_line(tmp_path):
    res = cli("eval", "--queries", str(tmp_path / "q.jsonl"), "--cost", "dollars", home=str(tmp_path / "ph"))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    (line,) = res.stderr.strip().splitlines()
    assert line == "error: --cost 'dollars' is not valid; valid: vectors, bytes, embed_seconds, latency"
    assert not (tmp_path / "ph").exists()  # refused before any server started
    res = cli("eval", "--queries", str(tmp_path / "q.jsonl"), "--prefer", "speed", home=str(tmp_path / "ph"))
    assert res.returncode == 2 and "--prefer 'speed' is not valid; valid: cost, quality" in res.stderr


def test_costs_are_not_regressions():
    """A cost that fell (fewer vectors, a faster query) or is unknown is no quality
    regression; a quality metric below the previous interval still is."""
    from grainline.evaluation.results import find_regressions

    prev = [{"chunker_key": "k", "method": "dense", "metric": m, "value": 10.0, "ci_low": 9.0, "ci_high": 11.0,
             "run_id": "eval-old"} for m in ("cost_latency_p50_ms", "cost_vectors", "ndcg@10")]
    now = [{"chunker_key": "k", "method": "dense", "metric": "cost_latency_p50_ms", "value": 2.0, "strategy": "s"},
           {"chunker_key": "k", "method": "dense", "metric": "cost_vectors", "value": None, "strategy": "s"},
           {"chunker_key": "k", "method": "dense", "metric": "ndcg@10", "value": 5.0, "strategy": "s"}]
    assert [g["metric"] for g in find_regressions(now, prev)] == ["ndcg@10"]


def test_the_frontier_and_its_plot(tmp_path):
    """On the frontier: no other configuration is at least as good for at most as many
    vectors; BM25 (no vectors) is on it when nothing scores higher for none."""
    from grainline.evaluation.report import _cost_plot, cost_section, frontier

    means = dict(MEANS, **{"paragraph/bm25": 0.45})
    vectors = dict(VECTORS, **{"paragraph/bm25": 0.0})
    run = _run(means, P, vectors)
    # sentence/dense: the best; paragraph/dense: less, for fewer; bm25: less, for none;
    # article/dense (0.30 for 25) is beaten by bm25 (0.45 for 0), paragraph/hybrid
    # (0.49 for 176) by paragraph/dense (0.50 for 176).
    assert frontier(run) == {"sentence/dense", "paragraph/dense", "paragraph/bm25"}
    rows = [x for x in cost_section(run) if x.startswith("| ")][1:]  # after the header
    on = {" ".join(x.split(" | ")[:2]).strip("| "): x.rstrip(" |").endswith("yes") for x in rows}
    assert on == {"sentence dense": True, "paragraph dense": True, "article dense": False, "paragraph hybrid": False,
                  "paragraph bm25": True}
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    png = _cost_plot(plt, run, tmp_path)
    assert png.name == "quality_per_cost.png" and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # without a known vector count for anyone there is nothing to draw
    assert _cost_plot(plt, _run(MEANS, P, dict.fromkeys(VECTORS)), tmp_path) is None


def test_latency_is_timed_on_the_first_queries_and_the_rest_retrieved_in_blocks():
    """Past LATENCY_QUERIES the queries are retrieved in one call: the same hits as one
    query at a time, and one latency figure per timed query."""
    import numpy as np

    from grainline.evaluation.costs import LATENCY_QUERIES
    from grainline.evaluation.retrieval import ChunkIndex, RetrievalContext
    from grainline.evaluation.runner import timed_retrieval

    rng = np.random.default_rng(3)
    n, dim = 300, 16
    vecs = rng.normal(size=(n, dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    index = ChunkIndex([f"c{i}" for i in range(n)], [f"d{i // 3}" for i in range(n)], np.arange(n) * 10,
                       np.arange(n) * 10 + 9, [f"t{i}" for i in range(n)], vecs)
    queries = [Query(f"q{i}", f"query {i}", {"d": 1}) for i in range(LATENCY_QUERIES + 57)]
    qv = {q.query_id: rng.normal(size=dim).astype(np.float32) for q in queries}
    hits, seconds = timed_retrieval(RetrievalContext(None, "k", index, qv), "dense", queries, 5)
    one_by_one = {}
    for q in queries:
        one_by_one.update(timed_retrieval(RetrievalContext(None, "k", index, qv), "dense", [q], 5)[0])
    assert len(seconds) == LATENCY_QUERIES and all(s > 0 for s in seconds)
    assert hits.keys() == one_by_one.keys() and len(hits) == len(queries)
    for qid, hs in hits.items():  # a block's matrix product may differ in a score's last bit
        assert [(h.doc_id, h.start) for h in hs] == [(h.doc_id, h.start) for h in one_by_one[qid]]
        assert [h.score for h in hs] == pytest.approx([h.score for h in one_by_one[qid]], abs=1e-5)
